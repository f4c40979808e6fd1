"""Rollback: undo what the run did, newest first, from what its journal says it did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from meshops.domain import redact
from meshops.domain.errors import DriverError, MeshopsError, RollbackFailed, StepError
from meshops.engine import templating
from meshops.engine.journal import Journal, RunState
from meshops.engine.playbook import LoadedPlaybook, StepSpec
from meshops.engine.runtypes import RunResult
from meshops.steps.base import Step, StepInputs

if TYPE_CHECKING:
    from meshops.engine.runner import Engine

log = structlog.get_logger("meshops.engine")


def undo_inputs(engine: Engine, spec: StepSpec, step: Step[Any, Any], ctx: dict[str, Any], s: Any) -> StepInputs:
    """The inputs the step acted with: as journaled when they are whole, else rendered again."""
    if s.inputs is not None and not _has_redacted(s.inputs):
        try:
            inputs: StepInputs = step.Inputs.model_validate(s.inputs)
            return inputs
        except ValidationError:
            pass
    return engine._render_inputs(spec, step, ctx, s.key)

def roll_back(engine: Engine, run_id: str, loaded: LoadedPlaybook, ctx: dict[str, Any], journal: Journal,
              state: RunState, *, cause: str) -> RunResult:
    pb = loaded.playbook
    engine._fresh_temp_dir(run_id)
    journal.strict = False  # a rollback finishes on the local journal even if the mirror fails
    journal.write("rollback_started", cause=cause)
    log.warning("rollback.start", run_id=run_id, cause=cause)
    # Undo in reverse order of completion; a step that failed or was cut off mid-way is
    # undone first (its undo looks before it acts, so a partial run is fine).
    candidates = [s for s in state.steps.values() if s.undo_status not in ("undone", "undo_skipped")]
    # Only what began acting is undone: a step_started record was written, with inputs that
    # rendered and validated. A step refused before that (bad inputs) changed nothing.
    partial = [s for s in candidates if s.status in ("started", "failed") and s.inputs_valid]
    finished = sorted((s for s in candidates if s.status == "succeeded"), key=lambda s: s.order, reverse=True)
    undone = 0
    for s in partial + finished:
        step_id = s.key.split("[", 1)[0]
        try:
            spec = pb.step(step_id)
        except KeyError:
            continue
        if spec.foreach is not None and "[" not in s.key:
            continue  # a foreach step is undone item by item
        step = engine._step_type(spec)
        if step.irreversible:
            journal.write("undo_skipped", step=s.key, reason="irreversible")
            continue
        if s.status in ("started", "failed") and step.side_effect_free:
            continue
        index = int(s.key.split("[", 1)[1].rstrip("]")) if "[" in s.key else None
        item_ctx = dict(ctx)
        if index is not None:
            items = templating.render_value(spec.foreach, ctx)
            item_ctx.update(item=items[index] if isinstance(items, list) and index < len(items) else None, index=index)
        try:
            inputs = undo_inputs(engine, spec, step, item_ctx, s)
            outputs = step.Outputs.model_validate(s.outputs) if s.status == "succeeded" and s.outputs is not None else None
            sctx = engine._make_ctx(run_id, spec, s.key, item_ctx.get("item"), 0, None, journal=journal, facts=s.facts)
            sctx.stop_requested = lambda: False  # a rollback is finished even when asked to stop
            engine.fence.check()
            journal.write("undo_started", step=s.key)
            _undo_with_retries(engine, step, inputs, outputs, sctx, s.key)
        except Exception as exc:
            message = exc.message if isinstance(exc, MeshopsError) else f"{type(exc).__name__}: {exc}"
            journal.write("undo_failed", step=s.key, error=message)
            msg = (f"rollback failed at {s.key}: {message}. The journal of run {run_id} says what is undone; "
                   f"fix it, then `meshops rollback {run_id}` continues from there")
            journal.write("run_finished", status="rollback_failed", failed_step=s.key, message=msg)
            raise RollbackFailed(msg) from None
        journal.write("undone", step=s.key)
        undone += 1
    msg = f"undid {undone} step(s)"
    journal.write("run_finished", status="rolled_back", message=msg)
    log.warning("rollback.done", run_id=run_id, undone=undone)
    return RunResult(run_id=run_id, status="rolled_back", message=msg)


def _has_redacted(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_redacted(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_redacted(v) for v in value)
    return isinstance(value, str) and redact.REDACTED in value


# Undo is idempotent, so a temporary failure (a 5xx, a 429, a dropped connection) is retried,
# like a forward step's: a rollback must not stop half-way on a blip.
UNDO_RETRIES = 5


def _undo_with_retries(engine: Engine, step: Step[Any, Any], inputs: StepInputs, outputs: Any, sctx: Any,
                       key: str) -> None:
    for attempt in range(1, UNDO_RETRIES + 2):
        try:
            step.undo(inputs, outputs, sctx)
            return
        except (StepError, DriverError) as exc:
            if not exc.temporary or attempt > UNDO_RETRIES or engine.fence.lost is not None:
                raise
            delay = exc.delay if isinstance(exc, StepError) and exc.delay is not None else min(30.0, 2.0 ** attempt)
            log.warning("undo.retry", step=key, error=exc.message, delay=delay)
            engine.opts.sleep(delay)

