"""``istio.discover``: what the mesh is made of, read in a dozen requests, changing nothing.

Revisions and their versions, tags and the default revision, the injector, tag and
validator webhooks and whether their services exist, each namespace's injection labels
and the revision its pods run, gateways, what will need a human, and the istioctl
programs at hand. ``meshops status`` prints the same summary.
"""

from __future__ import annotations

import time
from typing import Any

from meshops.domain.errors import LockHeld
from meshops.domain.k8stime import parse_time
from meshops.domain.mesh import INJECTION_LABEL, REV_LABEL, MeshSnapshot
from meshops.drivers.kube_api import KubeApi
from meshops.ops.istio_common import ISTIO_NAMESPACE, collect, kube_of
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register

LOCK_NAMESPACE = "meshops-system"
SAMPLE = 50
LOCK_NAME = "meshops-run-lock"

def snapshot(ctx: StepContext, kube: KubeApi, *, max_age: float = 0.0,
             istio_namespace: str = ISTIO_NAMESPACE) -> MeshSnapshot:
    """``collect``, reusing one this run took less than ``max_age`` seconds ago (discover and
    precheck run back to back; the waves always read afresh). The memo is the run's
    (``ctx.cache``), keyed by cluster context: never shared across runs or processes."""
    key = ("mesh-snapshot", kube.context, istio_namespace)
    hit = ctx.cache.get(key, now=ctx.clock(), max_age=max_age) if max_age > 0 else None
    if isinstance(hit, MeshSnapshot):
        return hit
    snap = collect(kube, istio_namespace=istio_namespace)
    ctx.cache.put(key, snap, now=ctx.clock())
    return snap


def summarize(snap: MeshSnapshot, *, from_revision: str = "") -> dict[str, Any]:
    """The mesh as plain data (journaled, printed by ``meshops status``)."""
    tags = snap.tags()
    default = snap.default_revision()
    old = from_revision or default or (sorted(snap.revisions)[0] if len(snap.revisions) == 1 else "")
    revisions = {name: {"version": r.version, "ready": r.ready, "replicas": r.replicas,
                        "tags": [t for t, rev in tags.items() if rev == name], "default": name == default}
                 for name, r in sorted(snap.revisions.items())}
    namespaces: dict[str, Any] = {}
    proxies_by_ns: dict[str, dict[str, int]] = {}
    for p in snap.live_proxies():
        bucket = proxies_by_ns.setdefault(p.namespace, {})
        bucket[p.revision or ""] = bucket.get(p.revision or "", 0) + 1
    for ns, labels in sorted(snap.namespaces.items()):
        injection, rev = labels.get(INJECTION_LABEL), labels.get(REV_LABEL)
        if injection is None and rev is None and ns not in proxies_by_ns:
            continue
        namespaces[ns] = {"injection": injection, "rev": rev, "selects": snap.namespace_revision(ns),
                          "proxies": proxies_by_ns.get(ns, {})}
    on_old = sorted({f"{p.owner_kind or 'Pod'}/{p.namespace}/{p.owner_name or p.name}"
                     for p in snap.pods_on(old)}) if old else []
    # The journal keeps this summary: a sample of a large fleet's workloads, and the count.
    sample = on_old[:SAMPLE]
    gateways = [{"kind": w.kind, "namespace": w.namespace, "name": w.name, "mode": w.gateway,
                 "revision": snap.gateway_revision(w), "replicas": w.replicas} for w in snap.gateways()]
    webhooks = [{"configuration": w.configuration, "name": w.name, "revision": w.serving_revision, "tag": w.tag,
                 "service": f"{w.service[0]}/{w.service[1]}" if w.service else "", "deactivated": w.deactivated,
                 "mutating": w.mutating} for w in snap.webhooks if w.injector or w.validator]
    return {
        "k8s_version": snap.kube_version,
        "revisions": revisions,
        "default_revision": default,
        "validator_revision": snap.validator_revision(),
        "tags": tags,
        "from_revision": old,
        "from_version": (snap.revisions[old].version or "") if old in snap.revisions else "",
        "namespaces": namespaces,
        "proxies_by_revision": snap.proxies_by_revision(),
        "proxies_by_version": snap.proxies_by_version(),
        "workloads_on_old": sample + ([f"... and {len(on_old) - SAMPLE} more"] if len(on_old) > SAMPLE else []),
        "workloads_on_old_count": len(on_old),
        "gateways": gateways,
        "webhooks": webhooks,
        "dangling_webhooks": snap.dangling_webhooks(),
        "blockers": [b.as_dict() for b in snap.blockers(old)] if old else [],
    }


def lock_holder(kube: KubeApi, *, now: float | None = None) -> dict[str, Any] | None:
    """The live holder of the run lock (Lease), or None when it is free or expired."""
    lease = kube.get("coordination.k8s.io/v1", "Lease", LOCK_NAME, LOCK_NAMESPACE)
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return None
    renewed = parse_time(spec.get("renewTime"))
    duration = float(spec.get("leaseDurationSeconds") or 30)
    if renewed + duration <= (time.time() if now is None else now):
        return None
    return {"holder": str(holder), "since": spec.get("acquireTime") or spec.get("renewTime") or "?"}


def check_lock(ctx: StepContext, kube: KubeApi) -> None:
    """Refuse (exit 4) when another run holds the cluster's lock; our own run's hold is fine."""
    held = lock_holder(kube, now=ctx.clock())
    if held and not held["holder"].startswith(f"{ctx.run_id}@"):
        raise LockHeld(holder=held["holder"], since=held["since"],
                       lock=f"Lease {LOCK_NAMESPACE}/{LOCK_NAME} in {kube.context}")


class DiscoverInputs(StepInputs):
    from_revision: str = ""
    istio_namespace: str = ISTIO_NAMESPACE


class DiscoverOutputs(StepOutputs):
    mesh: dict[str, Any]
    istioctls: dict[str, str]


@register
class Discover(Step[DiscoverInputs, DiscoverOutputs]):
    """Reads the mesh (a dozen cluster-wide lists) and the istioctl programs on PATH."""

    name = "istio.discover"
    Inputs, Outputs = DiscoverInputs, DiscoverOutputs
    needs = frozenset({"kube"})
    read_only = True
    side_effect_free = True

    def plan(self, inputs: DiscoverInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="mesh", detail="read only"),))

    def run(self, inputs: DiscoverInputs, ctx: StepContext) -> DiscoverOutputs:
        kube = kube_of(ctx)
        snap = snapshot(ctx, kube, istio_namespace=inputs.istio_namespace)
        mesh = summarize(snap, from_revision=inputs.from_revision)
        ctx.log.info("mesh.discovered", revisions=list(mesh["revisions"]), default=mesh["default_revision"],
                     tags=mesh["tags"], proxies=mesh["proxies_by_revision"], blockers=len(mesh["blockers"]))
        return DiscoverOutputs(mesh=mesh, istioctls=ctx.drivers.istioctl_versions())

    def undo(self, inputs: DiscoverInputs, outputs: DiscoverOutputs | None, ctx: StepContext) -> None:
        return None
