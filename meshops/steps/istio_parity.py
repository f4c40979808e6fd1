"""``istio.parity``: once the new istiod is up, prove it runs with the old one's settings.

Compares the effective configuration of the old and the new revision field by field
(``domain.parity``: mesh config, injector values, istiod env/resources/replicas, HPA, PDB,
webhook selectors). Differences the user asked for and those the target version documents
are listed in the outputs; any other stops the run here, before the first namespace moves,
naming each field (the run then rolls back, uninstalling the new revision).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from meshops.domain import parity
from meshops.domain.errors import PermanentStepError
from meshops.domain.versions import IstioVersion, VersionError
from meshops.ops.istio_common import ISTIO_NAMESPACE, kube_of
from meshops.ops.istio_settings import effective_of
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register


class ParityInputs(StepInputs):
    old_revision: str
    new_revision: str
    from_version: str = ""
    to_version: str = ""
    requested: list[str] = Field(default_factory=list)  # overlay paths the user set
    istio_namespace: str = ISTIO_NAMESPACE


class ParityOutputs(StepOutputs):
    compared: int
    requested: list[dict[str, Any]]
    documented: list[dict[str, Any]]
    unexpected: list[dict[str, Any]]


def _minor(text: str) -> int | None:
    try:
        return IstioVersion.parse(text).minor
    except VersionError:
        return None


def parity_report(kube: Any, inputs: ParityInputs) -> parity.ParityReport:
    old = effective_of(kube, inputs.old_revision, inputs.istio_namespace)
    new = effective_of(kube, inputs.new_revision, inputs.istio_namespace)
    return parity.compare(old, new, requested=parity.requested_paths(inputs.requested),
                          target_minor=_minor(inputs.to_version), from_minor=_minor(inputs.from_version))


@register
class Parity(Step[ParityInputs, ParityOutputs]):
    """Stops the upgrade when the new revision would silently change the mesh."""

    name = "istio.parity"
    Inputs, Outputs = ParityInputs, ParityOutputs
    needs = frozenset({"kube"})

    def plan(self, inputs: ParityInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target=f"revisions {inputs.old_revision} and "
                                                              f"{inputs.new_revision}",
                                        detail="compare mesh config, injector values, istiod, webhooks"),))

    def run(self, inputs: ParityInputs, ctx: StepContext) -> ParityOutputs:
        report = parity_report(kube_of(ctx), inputs)
        for d in (*report.requested, *report.documented):
            ctx.log.info("parity.difference", path=d.path, old=d.old, new=d.new, why=d.why)
        if not report.ok:
            raise PermanentStepError(
                f"parity gate: revision {inputs.new_revision} differs from {inputs.old_revision} in what nobody "
                "asked for (no namespace was moved):\n  - " + "\n  - ".join(d.describe() for d in report.unexpected)
                + "\nset them explicitly (--set) if the change is wanted")
        out = report.as_dict()
        return ParityOutputs(compared=out["compared"], requested=out["requested"], documented=out["documented"],
                             unexpected=[])

    def undo(self, inputs: ParityInputs, outputs: ParityOutputs | None, ctx: StepContext) -> None:
        return None
