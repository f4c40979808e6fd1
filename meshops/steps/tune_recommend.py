"""Step types of ``playbooks/tune.yaml`` (``meshops tune``): read Prometheus, then write the files.

``tune.gather`` only reads (it runs under ``meshops plan`` too) and outputs what the command
shows: the table, the two YAML documents and their text. ``tune.write_files`` writes the
documents into a directory; its undo puts back what was there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from meshops.domain.errors import DriverError, PermanentStepError
from meshops.domain.tuning import Policy
from meshops.ops import tune_report
from meshops.ops.tune_gather import Scope, gather
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register

OVERLAY_FILE = "tuning-overlay.yaml"
ANNOTATIONS_FILE = "proxy-annotations.yaml"


class GatherInputs(StepInputs):
    prometheus: Annotated[str, Field(min_length=1)]
    window_seconds: Annotated[float, Field(gt=0)]
    until: float | None = None  # unix seconds; None: now
    step_seconds: Annotated[int, Field(ge=60)] = 300
    namespaces: list[str] = Field(default_factory=list)
    istio_namespace: str = "istio-system"
    percentile: float = 95.0
    limit_percentile: float = 99.0
    min_samples: Annotated[int, Field(ge=1)] = 100


class GatherOutputs(StepOutputs):
    table: str
    yaml: str
    overlay: dict[str, Any]
    annotations: dict[str, Any]
    workloads: int
    queries: int


@register
class Gather(Step[GatherInputs, GatherOutputs]):
    """Recommends requests and limits for istiod, gateways and sidecars from what Prometheus saw."""

    name = "tune.gather"
    Inputs, Outputs = GatherInputs, GatherOutputs
    needs = frozenset({"prometheus"})
    read_only = True
    side_effect_free = True

    def run(self, inputs: GatherInputs, ctx: StepContext) -> GatherOutputs:
        try:
            policy = Policy(percentile=inputs.percentile, limit_percentile=inputs.limit_percentile,
                            min_samples=inputs.min_samples)
        except ValueError as exc:
            raise PermanentStepError(f"percentile/limit_percentile/min_samples: {exc}") from None
        scope = Scope(window_seconds=inputs.window_seconds, until=inputs.until, namespaces=tuple(inputs.namespaces),
                      istio_namespace=inputs.istio_namespace, step_seconds=inputs.step_seconds)
        try:
            report = gather(ctx.drivers.prometheus(inputs.prometheus), scope, policy, clock=ctx.clock)
        except DriverError as exc:
            # str() keeps the hint (is Prometheus running? is cAdvisor scraped?) for the operator.
            raise PermanentStepError(str(exc)) from None
        overlay = tune_report.overlay_document(report, inputs.prometheus)
        annotations = tune_report.annotations_document(report, inputs.prometheus)
        return GatherOutputs(table=tune_report.render_table(report), yaml=tune_report.dump([overlay, annotations]),
                             overlay=overlay, annotations=annotations, workloads=len(report.rows),
                             queries=report.queries)

    def undo(self, inputs: GatherInputs, outputs: GatherOutputs | None, ctx: StepContext) -> None:
        return None


class WriteInputs(StepInputs):
    out_dir: Annotated[str, Field(min_length=1)]
    overlay: dict[str, Any]
    annotations: dict[str, Any]


class WriteOutputs(StepOutputs):
    # What each file held before (None: it did not exist), so undo can put it back.
    previous: dict[str, str | None]


@register
class WriteFiles(Step[WriteInputs, WriteOutputs]):
    """Writes tuning-overlay.yaml and proxy-annotations.yaml into ``out_dir``."""

    name = "tune.write_files"
    Inputs, Outputs = WriteInputs, WriteOutputs

    def _files(self, inputs: WriteInputs) -> dict[str, str]:
        return {str(Path(inputs.out_dir, OVERLAY_FILE)): tune_report.dump([inputs.overlay]),
                str(Path(inputs.out_dir, ANNOTATIONS_FILE)): tune_report.dump([inputs.annotations])}

    def plan(self, inputs: WriteInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=tuple(Change(action="update" if os.path.exists(p) else "create", target=p)
                                      for p in self._files(inputs)))

    def run(self, inputs: WriteInputs, ctx: StepContext) -> WriteOutputs:
        os.makedirs(inputs.out_dir, exist_ok=True)
        previous: dict[str, str | None] = {}
        for path, text in self._files(inputs).items():
            p = Path(path)
            previous[path] = p.read_text(encoding="utf-8") if p.exists() else None
            if previous[path] != text:  # idempotent: a resumed run rewrites nothing
                p.write_text(text, encoding="utf-8")
        return WriteOutputs(previous=previous)

    def undo(self, inputs: WriteInputs, outputs: WriteOutputs | None, ctx: StepContext) -> None:
        if outputs is None:
            return  # nothing is known of what was there; leave the files
        for path, text in outputs.previous.items():
            p = Path(path)
            if text is None:
                p.unlink(missing_ok=True)
            else:
                p.write_text(text, encoding="utf-8")
