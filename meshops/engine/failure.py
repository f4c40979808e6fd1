"""What the engine decides when a step fails: the step's policy, and what the run had done.

Split out of ``runner.py``; pure functions of the playbook, the template context and the
journal, so each decision is the same wherever it is taken (forward run, resume).
"""

from __future__ import annotations

from typing import Any

import structlog

from meshops.domain.runlog import StepState
from meshops.engine import templating
from meshops.engine.journal import MirroredStateStore, RunState, StateStore
from meshops.engine.lock import RunLock
from meshops.engine.playbook import ON_FAILURE, Playbook, StepSpec
from meshops.steps import registry

log = structlog.get_logger("meshops.engine")


def on_failure_policy(spec: StepSpec, default: str, ctx: dict[str, Any]) -> str:
    """The step's failure policy, rendered when it is a template; an unknown answer is a rollback."""
    policy = spec.on_failure or default
    if templating.is_template(policy):
        try:
            policy = str(templating.render_value(policy, ctx))
        except templating.TemplateError as exc:
            log.error("step.on_failure_unrenderable", step=spec.id, error=str(exc))
            return "rollback"
    if policy not in ON_FAILURE:
        log.error("step.on_failure_unknown", step=spec.id, on_failure=policy)
        return "rollback"
    return policy


def nothing_changed(store: StateStore, run_id: str, pb: Playbook) -> bool:
    """Whether every step that ran so far only read (so there is nothing to undo)."""
    state = RunState.replay(run_id, store.records(run_id))
    for key, s in state.steps.items():
        if s.status not in ("succeeded", "started", "failed"):
            continue
        try:
            cls = registry.get(pb.step(key.split("[", 1)[0]).uses)
        except KeyError:
            return False
        if cls is None or not (cls.read_only or cls.side_effect_free):
            return False
    return True


def half_done(store: StateStore, run_id: str) -> str:
    """What finished and where the run stopped, for the message of a frozen run."""
    state = RunState.replay(run_id, store.records(run_id))
    done = [k for k, s in state.steps.items() if s.status == "succeeded"]
    started = [k for k, s in state.steps.items() if s.status in ("started", "failed")]
    return f"finished {done or 'nothing'}; stopped in {started or 'nothing'}"


def blank(key: str) -> StepState:
    return StepState(key=key)


def settle_finished(store: StateStore, lock: RunLock | None, run_id: str) -> None:
    """Tidy after a finished run that was killed between its last record and its exit.

    Its lock may still name it and its cluster mirror may lag by a record (chaos seed 101,
    run 44). A finished run writes nothing more, so freeing its own lock and levelling the
    mirror are safe whenever ``resume`` or ``rollback`` is asked of it again.
    """
    if lock is not None and lock.abandon(run_id):
        log.info("lock.freed_after_finish", run_id=run_id, lock=lock.name)
    if isinstance(store, MirroredStateStore):
        store.sync(run_id)
