"""Step type ``istio.status``: the mesh as ``meshops status`` shows it, read in one snapshot.

Read-only: it runs under ``meshops plan`` too, and ``playbooks/status.yaml`` is all
``meshops status`` runs. Its outputs are typed, so the command renders fields, not dict keys.
"""

from __future__ import annotations

from typing import Any

from meshops.ops.istio_common import ISTIO_NAMESPACE, collect
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.istio_discover import lock_holder, summarize
from meshops.steps.registry import register


class RevisionStatus(StepOutputs):
    version: str | None
    ready: bool
    replicas: int
    tags: list[str]
    default: bool


class NamespaceStatus(StepOutputs):
    injection: str | None
    rev: str | None
    selects: str | None
    proxies: dict[str, int]


class GatewayStatus(StepOutputs):
    kind: str
    namespace: str
    name: str
    mode: str
    revision: str | None
    replicas: int


class LockStatus(StepOutputs):
    holder: str
    since: str


class StatusInputs(StepInputs):
    istio_namespace: str = ISTIO_NAMESPACE


class StatusOutputs(StepOutputs):
    context: str
    k8s_version: str
    revisions: dict[str, RevisionStatus]
    default_revision: str | None
    validator_revision: str | None
    tags: dict[str, str]
    namespaces: dict[str, NamespaceStatus]
    proxies_by_revision: dict[str, int]
    proxies_by_version: dict[str, int]
    # Workloads whose proxies are not on the default revision, by the revision they are on.
    workloads_on_old: dict[str, list[str]]
    dangling_webhooks: list[str]
    webhooks: list[dict[str, Any]]
    gateways: list[GatewayStatus]
    lock: LockStatus | None


@register
class Status(Step[StatusInputs, StatusOutputs]):
    """Revisions, tags, the default revision, namespaces, proxies, webhooks, gateways and the run lock."""

    name = "istio.status"
    Inputs = StatusInputs
    Outputs = StatusOutputs
    needs = frozenset({"kube"})
    read_only = True
    side_effect_free = True

    def plan(self, inputs: StatusInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="the mesh", detail="read only"),))

    def run(self, inputs: StatusInputs, ctx: StepContext) -> StatusOutputs:
        kube = ctx.drivers.kube
        snap = collect(kube, istio_namespace=inputs.istio_namespace)
        data = summarize(snap)
        default = data["default_revision"]
        on_old: dict[str, set[str]] = {}
        for p in snap.live_proxies():
            if p.revision != default:
                on_old.setdefault(p.revision or "?", set()).add(
                    f"{p.owner_kind or 'Pod'}/{p.namespace}/{p.owner_name or p.name}")
        for key in ("blockers", "workloads_on_old_count", "from_revision", "from_version"):
            data.pop(key, None)
        data["workloads_on_old"] = {rev: sorted(refs) for rev, refs in sorted(on_old.items())}
        return StatusOutputs.model_validate({"context": kube.context, **data,
                                             "lock": lock_holder(kube, now=ctx.clock())})

    def undo(self, inputs: StatusInputs, outputs: StatusOutputs | None, ctx: StepContext) -> None:
        return None
