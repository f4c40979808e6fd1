"""``istio.move_wave``: move one wave of namespaces to the new revision, gate it, or put it back.

A wave, as ``istio.upgrade_check`` planned it: retarget the tags the wave starts with
(``istioctl tag set``), relabel its namespaces, then restart every workload there whose
pods run the old revision, ``concurrency`` at a time, until each one's pods all run the
new revision and are ready (read from watches). Then its gates: PromQL conditions,
HTTP probes, and a human's approval if asked. All within ``wave_timeout``.

Undo puts the wave back in the one order that never leaves a namespace selecting a
missing revision: labels back, tags back, then the moved workloads restarted onto the
old revision. The tags a later wave relies on are put back by every wave's undo (it is
idempotent); tags the run *created* are deleted only by the wave that created them,
once no namespace of a later wave can still be using them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import Field

from meshops.domain.durations import parse_duration
from meshops.domain.errors import PermanentStepError
from meshops.domain.mesh import INJECT_LABEL, REV_LABEL, WORKLOAD_KINDS, MeshSnapshot, Pod
from meshops.domain.mesh_plan import WavePlan, wave_from_dict
from meshops.drivers.kube_api import KubeApi
from meshops.ops import k8s_restart as restarts
from meshops.ops.istio_common import (
    ADMISSION,
    ISTIO_NAMESPACE,
    MWC,
    RESTARTED_BY,
    kube_of,
    restore,
    retarget_tags,
    revision_exists,
    set_namespace_labels,
)
from meshops.steps.base import Change, Duration, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.gates import Approve, ApproveInputs
from meshops.steps.registry import register

UNDO_SECONDS = 300.0


class WaveInputs(StepInputs):
    wave: dict[str, Any]
    old_revision: str
    new_revision: str
    mode: str = "tags"  # tags | relabel | restart (in place)
    to_version: str  # accept pods whose proxy runs this version (in place), and the istioctl to use
    backup: list[dict[str, Any]] = Field(default_factory=list)
    canary_tag: str = "prod-canary"
    concurrency: Annotated[int, Field(ge=1)] = 20
    wave_timeout: Duration = "10m"
    istioctl: str = ""
    prometheus: str = ""
    gate_exprs: list[str] = Field(default_factory=list)  # "{namespaces}" becomes the wave's namespaces regex
    probes: list[str] = Field(default_factory=list)
    gate_duration: Duration = "0s"
    gate_interval: Duration = "10s"
    approve: bool = False
    istio_namespace: str = ISTIO_NAMESPACE


class WaveOutputs(StepOutputs):
    index: int
    namespaces: list[str]
    relabelled: list[str]
    flipped: list[str]
    restarted: list[str]
    already: list[str]
    not_moved: dict[str, str]
    holding_old: list[str]
    gates: dict[str, Any] = Field(default_factory=dict)
    # How long the restarts took: the whole window, and each rollout (count, mean, p50, p90, max).
    restart_seconds: float = 0.0
    rollouts: dict[str, float] = Field(default_factory=dict)


def _mark(ctx: StepContext, wave: WavePlan, undo: bool = False) -> str:
    return f"{ctx.run_id}/{'undo-' if undo else ''}wave-{wave.index}"


def _wave_snapshot(kube: KubeApi, cache: Any, namespaces: list[str]) -> MeshSnapshot:
    """Namespaces and webhooks afresh (2 requests); workloads and pods from the informers."""
    wanted = set(namespaces)
    ns_objs = [n for n in kube.list("v1", "Namespace").items if n["metadata"]["name"] in wanted]
    mutating = kube.list(ADMISSION, MWC).items
    with cache.cond:
        workloads = [w for kind in WORKLOAD_KINDS for (ns, _), w in cache.workloads[kind].items.items() if ns in wanted]
        pods = [p for (ns, _), p in cache.pods.items.items() if ns in wanted]
    return MeshSnapshot.from_objects(kube_version="", namespaces=ns_objs, pods=pods, workloads=workloads,
                                     mutating=mutating, validating=[])


def _targets(snap: MeshSnapshot, wave: WavePlan, *, new: str, on_old: Any, mark: str
             ) -> tuple[list[restarts.Target], dict[str, str]]:
    """The workloads of the wave to restart (those with a pod ``on_old``, or marked by an earlier
    attempt), with any pod label the move needs; and why the others stay. ``new`` is "" in place."""
    targets: list[restarts.Target] = []
    not_moved: dict[str, str] = {}
    for w in sorted(snap.workloads.values(), key=lambda w: w.key):
        if w.kind not in WORKLOAD_KINDS or w.gateway or w.istiod:
            continue
        pods = [p for p in snap.pods_of(w) if p.live]
        marked = w.annotations.get(RESTARTED_BY) == mark
        if not marked and not any(on_old(p) for p in pods):
            continue
        if not w.restartable:
            not_moved[w.key] = f"update strategy {w.strategy}: meshops does not restart it"
            continue
        if not new:  # in place: the revision keeps its name
            targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name))
            continue
        ns_labels = snap.namespaces.get(w.namespace, {})
        now = snap.workload_revision(w)
        if now == new:
            targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name))
            continue
        selects_by_pod = REV_LABEL in w.template_labels or w.template_labels.get(INJECT_LABEL) == "true"
        if selects_by_pod and wave.pod_label:
            labels = {**w.template_labels, REV_LABEL: wave.pod_label}
            if snap.injector_for(w.namespace, ns_labels, labels, w.template_annotations) == new:
                targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name,
                                               labels={REV_LABEL: wave.pod_label}))
                continue
        not_moved[w.key] = f"a new pod would be injected by {now or 'nobody'}, not {new}"
    return targets, not_moved


def _gates(ctx: StepContext, inputs: WaveInputs, namespaces: list[str]) -> list[Any]:
    from meshops.ops.health import ProbeTarget, http_gate, promql_gate

    gates: list[Any] = []
    regex = "|".join(namespaces)
    if inputs.gate_exprs and inputs.prometheus:
        client = ctx.drivers.prometheus(inputs.prometheus)
        gates += [promql_gate(client, expr.replace("{namespaces}", regex)) for expr in inputs.gate_exprs]
    if inputs.probes:
        prober = ctx.drivers.http()
        gates += [http_gate(prober, ProbeTarget(url=u)) for u in inputs.probes]
    return gates


@register
class MoveWave(Step[WaveInputs, WaveOutputs]):
    """Moves one wave: tags, labels, restarts (K at a time, watched), verification, gates."""

    name = "istio.move_wave"
    Inputs, Outputs = WaveInputs, WaveOutputs
    needs = frozenset({"kube"})
    # `meshops approve RUN waves[i]` answers --approve-each-wave.
    approval_gate: ClassVar[bool] = True

    def plan(self, inputs: WaveInputs, ctx: StepContext) -> StepPlan:
        wave = wave_from_dict(inputs.wave)
        # Why the wave is this big and why each namespace is in it (meshops.domain.waves).
        changes = [Change(action="wave", target=f"{len(wave.namespaces)} namespace(s), {wave.workloads} workload(s)",
                          detail=wave.reason)] if wave.reason else []
        changes += [Change(action="place", target=f"Namespace/{ns}", detail=why) for ns, why in wave.why.items()]
        changes += [Change(action="call", target=f"istioctl tag set {tag}", detail=f"--revision {rev}")
                   for tag, rev in sorted(wave.flip.items())]
        changes += [Change(action="patch", target=f"Namespace/{ns}",
                           detail=", ".join(f"{k}={v}" if v is not None else f"{k}-" for k, v in labels.items()))
                    for ns, labels in sorted(wave.relabel.items())]
        target = inputs.new_revision if inputs.mode != "restart" else f"{inputs.old_revision} at {inputs.to_version}"
        changes.append(Change(action="restart", target=f"{wave.workloads} workload(s) in {', '.join(wave.namespaces)}",
                              detail=f"onto {target}, {inputs.concurrency} at a time"))
        gates = len(inputs.gate_exprs) + len(inputs.probes)
        changes.append(Change(action="wait", target="wave gate",
                              detail=f"ready within {inputs.wave_timeout}" + (f", {gates} gate(s)" if gates else "")
                              + (", approval" if inputs.approve else "")))
        return StepPlan(changes=tuple(changes))

    def _accept_new(self, inputs: WaveInputs) -> Any:
        if inputs.mode == "restart":
            return lambda p: p.proxy_version == inputs.to_version
        return lambda p: p.revision == inputs.new_revision

    def run(self, inputs: WaveInputs, ctx: StepContext) -> WaveOutputs:
        wave = wave_from_dict(inputs.wave)
        kube = kube_of(ctx)
        start = ctx.clock()
        budget = min(parse_duration(inputs.wave_timeout), ctx.wait_budget(parse_duration(inputs.wave_timeout)))
        if not revision_exists(kube, inputs.new_revision, inputs.istio_namespace):
            raise PermanentStepError(f"revision {inputs.new_revision} is not installed: a wave cannot move to it")
        flipped: list[str] = []
        if wave.flip:
            ictl = ctx.drivers.istioctl(inputs.to_version, path=inputs.istioctl or None)
            flipped = retarget_tags(ctx, ictl, kube, wave.flip)
        relabelled = [ns for ns, labels in sorted(wave.relabel.items()) if set_namespace_labels(kube, ns, labels)]
        ctx.log.info("wave.selected", wave=wave.index, flipped=flipped, relabelled=relabelled)
        cache = ctx.drivers.workload_cache()
        accept_new = self._accept_new(inputs)
        snap = _wave_snapshot(kube, cache, wave.namespaces)
        mark = _mark(ctx, wave)
        targets, not_moved = _targets(snap, wave, new="" if inputs.mode == "restart" else inputs.new_revision,
                                      on_old=lambda p: p.revision is not None and not accept_new(p), mark=mark)
        for key, why in not_moved.items():
            ctx.log.warning("wave.not_moved", workload=key, reason=why)
        began = ctx.clock()
        report = restarts.restart(ctx, kube, cache, targets, accept=accept_new, mark=mark,
                                  concurrency=inputs.concurrency, timeout=max(0.0, budget - (ctx.clock() - start)))
        restart_seconds = round(ctx.clock() - began, 3)
        if not report.ok:
            raise PermanentStepError(f"wave {wave.index} did not become ready within {inputs.wave_timeout}: "
                                     + "; ".join(report.problems()[:10]))
        gateways = {(w.kind, w.namespace, w.name) for w in snap.workloads.values() if w.gateway}
        holding = self._verify(cache, wave, targets, accept_new, gateways)
        gate_report: dict[str, Any] = {}
        gates = _gates(ctx, inputs, wave.namespaces)
        if gates:
            from meshops.ops.health import watch

            gate_report = watch(gates, duration=parse_duration(inputs.gate_duration),
                                interval=parse_duration(inputs.gate_interval), clock=ctx.clock, sleep=ctx.sleep,
                                log=ctx.log, on_result=lambda r: None if r.ok else ctx.log.warning("gate.failed", gate=r.name,
                                                                                       detail=r.detail)).as_dict()
        if inputs.approve:
            Approve().run(ApproveInputs(message=f"wave {wave.index} ({', '.join(wave.namespaces)}) moved; "
                                                f"continue?", wait="0s"), ctx)
        ctx.log.info("wave.done", wave=wave.index, restarted=len(report.restarted), already=len(report.already),
                     holding_old=len(holding), seconds=round(ctx.clock() - start, 1))
        return WaveOutputs(index=wave.index, namespaces=wave.namespaces, relabelled=relabelled, flipped=flipped,
                           restarted=report.restarted, already=report.already, not_moved=not_moved,
                           holding_old=holding, gates=gate_report, restart_seconds=restart_seconds,
                           rollouts=report.timing())

    @staticmethod
    def _verify(cache: Any, wave: WavePlan, targets: list[restarts.Target], accept: Any,
                gateways: set[tuple[str, str, str]]) -> list[str]:
        """Every pod of every moved workload runs the new proxy; return the pods of the wave's
        namespaces that still run another one (naked pods, Jobs, OnDelete: reported, not failed).
        Gateways move later, in their own step."""
        moved = {(t.kind, t.namespace, t.name) for t in targets}
        wanted = set(wave.namespaces)
        holding, wrong = [], []
        with cache.cond:
            pods: list[Pod] = [p for (ns, _), p in cache.pods.items.items() if ns in wanted]
        for p in pods:
            if not p.live or p.revision is None or accept(p) or (p.owner_kind, p.namespace, p.owner_name) in gateways:
                continue
            if (p.owner_kind, p.namespace, p.owner_name) in moved:
                wrong.append(p.ref)
            else:
                holding.append(p.ref)
        if wrong:
            raise PermanentStepError(f"wave {wave.index}: pods of restarted workloads still run the old proxy: "
                                     + ", ".join(sorted(wrong)[:10]))
        return sorted(holding)

    def undo(self, inputs: WaveInputs, outputs: WaveOutputs | None, ctx: StepContext) -> None:
        wave = wave_from_dict(inputs.wave)
        kube = kube_of(ctx)
        if inputs.mode != "restart" and not revision_exists(kube, inputs.old_revision, inputs.istio_namespace):
            raise PermanentStepError(
                f"revision {inputs.old_revision} is no longer installed (finalized): moving wave {wave.index} back "
                f"would leave its namespaces selecting a missing revision. Reinstall {inputs.old_revision} first.")
        for ns, original in sorted(wave.original.items()):
            set_namespace_labels(kube, ns, original)
        canary_refs = {f"istio-revision-tag-{inputs.canary_tag}", f"istiod-revision-tag-{inputs.canary_tag}"}
        if wave.canary:
            entries = [e for e in inputs.backup if e["ref"]["name"] in canary_refs]
        else:
            # Tags that existed before the run go back now (a later wave's namespaces may use them);
            # tags the run created go only with the wave that created them.
            entries = [e for e in inputs.backup if e["ref"]["name"] not in canary_refs
                       and (e.get("object") is not None or wave.flip)]
        changed = restore(kube, entries)
        if changed:
            ctx.log.info("wave.undo.tags", wave=wave.index, changed=changed)
        if inputs.mode == "restart":
            return  # in place: the install's undo reinstalls the old version; its restarts follow
        cache = ctx.drivers.workload_cache()
        snap = _wave_snapshot(kube, cache, wave.namespaces)
        forward = _mark(ctx, wave)
        back = _mark(ctx, wave, undo=True)
        targets = []
        for w in sorted(snap.workloads.values(), key=lambda w: w.key):
            # Injected gateways follow their namespace back too; installed ones are the gateways step's.
            if w.kind not in WORKLOAD_KINDS or w.gateway == "installed" or w.istiod or not w.restartable:
                continue
            annotations = w.annotations
            on_new = any(p.live and p.revision == inputs.new_revision for p in snap.pods_of(w))
            if not on_new and annotations.get(RESTARTED_BY) not in (forward, back):
                continue
            pod_labels: dict[str, str | None] = {}
            if restarts.ORIGINAL_POD_LABELS in annotations:
                pod_labels = dict(json.loads(annotations[restarts.ORIGINAL_POD_LABELS]))
            targets.append(restarts.Target(kind=w.kind, namespace=w.namespace, name=w.name, labels=pod_labels,
                                           forget_original=True, forced=True))
        # A rollback gets at least UNDO_SECONDS, however short the wave timeout that failed was.
        timeout = ctx.wait_budget(max(parse_duration(inputs.wave_timeout), UNDO_SECONDS))
        report = restarts.restart(ctx, kube, cache, targets, accept=lambda p: p.revision == inputs.old_revision,
                                  mark=back, concurrency=inputs.concurrency, timeout=timeout)
        if not report.ok:
            raise PermanentStepError(f"moving wave {wave.index} back to {inputs.old_revision}: "
                                     + "; ".join(report.problems()[:10]))
        ctx.log.info("wave.undone", wave=wave.index, restarted=len(report.restarted))



class RestartBackInputs(StepInputs):
    namespaces: list[str]
    from_version: str
    to_version: str
    concurrency: Annotated[int, Field(ge=1)] = 20
    timeout: str | float = "10m"


@register
class RestartBack(Step[RestartBackInputs, StepOutputs]):
    """In place, placed before the install: does nothing, and on rollback (after the install's undo
    has put the old version back) restarts every workload that runs the new proxy onto the old
    one, so no proxy is left ahead of its control plane."""

    name = "istio.restart_back"
    Inputs, Outputs = RestartBackInputs, StepOutputs

    needs = frozenset({"kube"})

    def plan(self, inputs: RestartBackInputs, ctx: StepContext) -> StepPlan:
        return StepPlan(changes=(Change(action="none", target="-", detail="on rollback: restart onto "
                                                                          f"{inputs.from_version}"),))

    def run(self, inputs: RestartBackInputs, ctx: StepContext) -> StepOutputs:
        return StepOutputs()

    def undo(self, inputs: RestartBackInputs, outputs: StepOutputs | None, ctx: StepContext) -> None:
        kube = kube_of(ctx)
        cache = ctx.drivers.workload_cache()
        wanted = set(inputs.namespaces)
        with cache.cond:
            owners = {(p.owner_kind, p.namespace, p.owner_name) for (ns, _), p in cache.pods.items.items()
                      if ns in wanted and p.live and p.proxy_version == inputs.to_version}
        targets = [restarts.Target(kind=k, namespace=ns, name=n) for k, ns, n in sorted(owners) if k in WORKLOAD_KINDS]
        report = restarts.restart(ctx, kube, cache, targets, accept=lambda p: p.proxy_version == inputs.from_version,
                                  mark=f"{ctx.run_id}/restart-back", concurrency=inputs.concurrency,
                                  timeout=ctx.wait_budget(parse_duration(inputs.timeout)), force=True)
        if not report.ok:
            raise PermanentStepError(f"restarting onto {inputs.from_version}: " + "; ".join(report.problems()[:10]))
