"""``meshops plan`` and ``--dry-run``: what each step would do, with secrets redacted."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import structlog

from meshops.domain import redact
from meshops.domain.errors import BadInput, DriverError, StepError
from meshops.drivers.dry_run import DryRunDrivers
from meshops.engine import run_secrets, templating
from meshops.engine.journal import new_run_id
from meshops.engine.playbook import LoadedPlaybook
from meshops.engine.preflight import preflight
from meshops.engine.runtypes import PlannedStep, StepFailed

if TYPE_CHECKING:
    from meshops.engine.runner import Engine

log = structlog.get_logger("meshops.engine")


def plan_run(engine: Engine, loaded: LoadedPlaybook, params: dict[str, Any]) -> list[PlannedStep]:
    """``Engine.plan`` under the run's secret registry: preflight, then every step planned and scrubbed."""
    with redact.activated(engine.secrets):
        try:
            preflight(loaded, params)
        except BadInput as exc:
            run_secrets.scrub_error(exc, engine.secrets)
            raise
        return [scrub_planned(engine, p) for p in plan_steps(engine, loaded, params)]


def scrub_planned(engine: Engine, p: PlannedStep) -> PlannedStep:
    text = engine.secrets.scrub_text
    return dataclasses.replace(
        p, inputs=engine.secrets.scrub(p.inputs), note=text(p.note), error=None if p.error is None else text(p.error),
        changes=[dataclasses.replace(c, target=text(c.target), detail=text(c.detail)) for c in p.changes])


def plan_steps(engine: Engine, loaded: LoadedPlaybook, params: dict[str, Any]) -> list[PlannedStep]:
    """What each step would do, without changing anything.

    Read-only steps really run, so later steps are planned from real findings; a step
    whose inputs depend on what an earlier, changing step would output says so. Every step
    gets dry-run drivers: reads reach the systems, writes are recorded and never made.
    """
    dry = DryRunDrivers(engine.drivers)
    # A real, unique id (not a constant): a dry run's events must not mix with another's.
    run_id = new_run_id(f"{loaded.playbook.metadata.name}-dry-run", engine.opts.clock())
    ctx: dict[str, Any] = {"params": params, "steps": {}, "run": {"id": run_id}}
    planned: list[PlannedStep] = []
    for spec in loaded.playbook.steps:
        step = engine._step_type(spec)
        try:
            if not templating.evaluate_condition(spec.when, ctx):
                planned.append(PlannedStep(step_id=spec.id, uses=spec.uses, skipped=True, note="when is false"))
                ctx["steps"][spec.id] = {"outputs": {}, "status": "skipped"}
                continue
            items = [None] if spec.foreach is None else templating.render_value(spec.foreach, ctx)
            if not isinstance(items, list):
                raise templating.TemplateError(f"foreach must give a list, got {type(items).__name__}")
            for i, item in enumerate(items):
                key = spec.id if spec.foreach is None else f"{spec.id}[{i}]"
                item_ctx = ctx if spec.foreach is None else {**ctx, "item": item, "index": i}
                inputs = engine._render_inputs(spec, step, item_ctx, key)
                sctx = engine._make_ctx(run_id, spec, key, item, 1, None, drivers=dry)
                if step.read_only:
                    before = len(dry.writes)
                    out = step.run(inputs, sctx).model_dump(mode="json")
                    note = "read-only: ran to plan the steps after it"
                    if len(dry.writes) > before:
                        # A read-only step that writes is a bug; the dry-run drivers kept it harmless.
                        suppressed = [str(w) for w in dry.writes[before:]]
                        log.warning("plan.write_suppressed", step=key, writes=suppressed)
                        note += f"; tried {len(suppressed)} write(s), not made: " + "; ".join(suppressed[:3])
                    planned.append(PlannedStep(step_id=key, uses=spec.uses, inputs=inputs.model_dump(mode="json"),
                                               note=note, outputs=out))
                    ctx["steps"][spec.id] = {"outputs": out, "status": "succeeded"}
                else:
                    p = step.plan(inputs, sctx)
                    planned.append(PlannedStep(step_id=key, uses=spec.uses, inputs=inputs.model_dump(mode="json"),
                                               changes=list(p.changes), predictable=p.predictable, note=p.note))
        except (StepFailed, templating.TemplateError) as exc:
            reason = exc.reason if isinstance(exc, StepFailed) else str(exc)
            planned.append(PlannedStep(step_id=spec.id, uses=spec.uses, predictable=False,
                                       note=f"cannot plan until earlier steps have run: {reason}"))
        except (StepError, DriverError) as exc:
            planned.append(PlannedStep(step_id=spec.id, uses=spec.uses, predictable=False, error=exc.message,
                                       note="would fail now"))
    return planned
