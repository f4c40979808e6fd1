"""The generic check every command runs before a run exists: plan the playbook (its read-only
steps really run, on dry-run drivers) and refuse, with nothing changed, when any step would fail now."""

from __future__ import annotations

from typing import Any

from meshops.domain.errors import BadInput
from meshops.engine.playbook import LoadedPlaybook
from meshops.engine.runner import Engine
from meshops.engine.runtypes import PlannedStep


class PlanRefused(BadInput):
    """Exit 2: a step would fail now. ``planned`` is the whole plan, for the caller to show."""

    def __init__(self, message: str, planned: list[PlannedStep]) -> None:
        super().__init__(message)
        self.planned = planned


def refuse_if_any_step_would_fail(engine: Engine, loaded: LoadedPlaybook, params: dict[str, Any]) -> list[PlannedStep]:
    planned = engine.plan(loaded, params)
    errors = [p for p in planned if p.error]
    if errors:
        raise PlanRefused(f"{errors[0].step_id}: {errors[0].error}; nothing was changed", planned)
    return planned
