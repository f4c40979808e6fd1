"""How a data plane moves from one revision to another: which namespaces, in which waves, by
which label or tag change. Pure: it reads a ``MeshSnapshot`` and returns a plan.

Two modes:

- ``tags`` (default). Namespaces keep selecting a revision *tag*; moving them means
  retargeting the tag (``istioctl tag set``), once, at the start of the first bulk wave.
  ``istio-injection=enabled`` namespaces follow the ``default`` tag. Namespaces named in
  ``--first`` are relabelled to the canary tag so they move alone, before everyone else;
  namespaces labelled with the old revision's *name* are relabelled to the stable tag.
- ``relabel``. Each namespace of a wave gets ``istio.io/rev=<new>`` and loses
  ``istio-injection`` (the Istio docs' per-namespace procedure). Tags move at finalize.

Either way a workload moves only when it is restarted, wave by wave. ``restart`` (in place:
the revision keeps its name and gets a new version) only restarts. Which namespaces go in
which wave (growing waves, the operator's order) is ``meshops.domain.waves``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from meshops.domain.mesh import (
    IGNORED_NAMESPACES,
    INJECT_LABEL,
    INJECTION_LABEL,
    REV_LABEL,
    WORKLOAD_KINDS,
    MeshSnapshot,
    Workload,
)
from meshops.domain.waves import NamespaceFacts, WaveError, WaveShape, plan_waves

Labels = dict[str, str | None]  # None removes the label


class PlanError(ValueError):
    """The requested move cannot be planned (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class WavePlan:
    index: int
    namespaces: list[str]
    relabel: dict[str, Labels]  # namespace -> labels to set
    original: dict[str, Labels]  # namespace -> the same label keys before
    flip: dict[str, str]  # tag -> revision, retargeted at the start of the wave
    pod_label: str  # istio.io/rev for workloads that select by pod label
    workloads: int  # restartable workloads on the old revision when planned
    canary: bool = False
    reason: str = ""  # why the wave has this many namespaces
    why: dict[str, str] = field(default_factory=dict)  # namespace -> why it sits in this wave


@dataclass(frozen=True, kw_only=True)
class UpgradePlan:
    old: str
    new: str
    mode: str
    stable_tag: str
    canary_tag: str
    waves: list[WavePlan]
    tags_before: dict[str, str | None]  # every tag a wave retargets -> its revision before (None: absent)
    bulk_flip: dict[str, str] = field(default_factory=dict)
    canary_flip: dict[str, str] = field(default_factory=dict)
    # At finalize, --first namespaces get these labels back (their tag now serves the new revision).
    first_restore: dict[str, Labels] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def workloads(self) -> int:
        return sum(w.workloads for w in self.waves)


def movable_workloads(snap: MeshSnapshot, namespace: str, old: str) -> list[Workload]:
    """Workloads of ``namespace`` whose pods run ``old`` and that a pod-template restart moves."""
    out = []
    for w in snap.workloads.values():
        if w.namespace != namespace or w.kind not in WORKLOAD_KINDS or w.gateway or w.istiod or not w.restartable:
            continue
        if any(p.live and p.revision == old for p in snap.pods_of(w)):
            out.append(w)
    return sorted(out, key=lambda w: w.key)


def _involved(snap: MeshSnapshot, old: str) -> dict[str, list[Workload]]:
    """Namespaces that select ``old`` (even empty ones: they must not keep selecting it) or hold
    movable workloads on it. Gateways move separately, after the data plane."""
    out: dict[str, list[Workload]] = {}
    for ns in sorted(snap.namespaces):
        if ns in IGNORED_NAMESPACES:
            continue
        workloads = movable_workloads(snap, ns, old)
        if workloads or snap.namespace_revision(ns) == old:
            out[ns] = workloads
    return out


def _ns_labels(snap: MeshSnapshot, ns: str) -> Labels:
    labels = snap.namespaces.get(ns, {})
    return {INJECTION_LABEL: labels.get(INJECTION_LABEL), REV_LABEL: labels.get(REV_LABEL)}


def _facts(snap: MeshSnapshot, involved: dict[str, list[Workload]]) -> list[NamespaceFacts]:
    statefulsets: dict[str, int] = {}
    for w in snap.workloads.values():
        if w.kind == "StatefulSet" and not w.gateway:
            statefulsets[w.namespace] = statefulsets.get(w.namespace, 0) + 1
    return [NamespaceFacts(name=ns, workloads=len(ws), pods=sum(1 for w in ws for p in snap.pods_of(w) if p.live),
                           statefulsets=statefulsets.get(ns, 0), labels=snap.namespaces.get(ns, {}),
                           annotations=snap.namespace_annotations.get(ns, {}))
            for ns, ws in involved.items()]


def plan_upgrade(snap: MeshSnapshot, *, old: str, new: str, mode: str = "tags", first: list[str] | None = None,
                 wave_size: int = 0, growth: float = 2.0, max_wave_size: int = 0, order: str = "size",
                 stable_tag: str = "prod-stable", canary_tag: str = "prod-canary") -> UpgradePlan:
    """``wave_size`` 0: growing waves (``growth``, ``max_wave_size``); N: equal waves of N namespaces."""
    if mode not in ("tags", "relabel", "restart"):
        raise PlanError(f"unknown mode {mode!r} (tags, relabel or restart)")
    involved = _involved(snap, old)
    first = list(dict.fromkeys(first or []))
    unknown = [ns for ns in first if ns not in snap.namespaces]
    if unknown:
        raise PlanError(f"--first names namespaces that do not exist: {', '.join(unknown)}")
    not_on_old = [ns for ns in first if ns not in involved]
    if not_on_old:
        raise PlanError(f"--first names namespaces with nothing on revision {old}: {', '.join(not_on_old)}")
    rest = [ns for ns in involved if ns not in first]
    tags = snap.tags()
    default_rev = snap.default_revision()

    def relabel_to(value: str) -> Labels:
        return {INJECTION_LABEL: None, REV_LABEL: value}

    relabel: dict[str, Labels] = {}
    canary_flip: dict[str, str] = {}
    bulk_flip: dict[str, str] = {}
    first_restore: dict[str, Labels] = {}
    if mode == "restart":
        pass  # in place: the revision keeps its name, workloads only restart
    elif mode == "relabel":
        for ns in involved:
            if snap.namespace_revision(ns) == old or _ns_labels(snap, ns)[REV_LABEL] == old:
                relabel[ns] = relabel_to(new)
    else:
        if first:
            canary_flip[canary_tag] = new
        for ns in first:
            labels = _ns_labels(snap, ns)
            if labels[INJECTION_LABEL] or labels[REV_LABEL]:
                relabel[ns] = relabel_to(canary_tag)
                selects_tag = labels[INJECTION_LABEL] == "enabled" or (labels[REV_LABEL] or "") in tags
                first_restore[ns] = labels if selects_tag else relabel_to(stable_tag)
        for ns in rest:
            labels = _ns_labels(snap, ns)
            if labels[INJECTION_LABEL] == "enabled":
                if default_rev == old:
                    bulk_flip["default"] = new
            elif labels[REV_LABEL]:
                value = labels[REV_LABEL] or ""
                if tags.get(value) == old:
                    bulk_flip[value] = new
                elif value == old:
                    relabel[ns] = relabel_to(stable_tag)
                    bulk_flip[stable_tag] = new
            else:
                for w in involved[ns]:
                    pod_rev = w.template_labels.get(REV_LABEL)
                    if pod_rev and tags.get(pod_rev) == old:
                        bulk_flip[pod_rev] = new
                    elif pod_rev == old:
                        bulk_flip[stable_tag] = new
                    elif w.template_labels.get(INJECT_LABEL) == "true" and default_rev == old:
                        bulk_flip["default"] = new
        if canary_tag in bulk_flip:
            raise PlanError(f"namespaces outside --first select the canary tag {canary_tag!r}; "
                            "name them in --first or pick another --canary-tag")

    try:
        placements = plan_waves(_facts(snap, involved), first=first, shape=WaveShape(
            growth=growth, max_wave_size=max_wave_size, wave_size=wave_size, order=order))
    except WaveError as exc:
        raise PlanError(str(exc)) from None
    waves: list[WavePlan] = []
    for place in placements:
        names = place.namespaces
        pod_label = {"relabel": new, "restart": ""}.get(mode) or (canary_tag if place.canary else stable_tag)
        # The tags flip with the first wave that needs them: the canary tag with --first, the others after.
        flip = canary_flip if place.canary else {} if any(not w.canary for w in waves) else bulk_flip
        waves.append(WavePlan(
            index=len(waves), namespaces=names, canary=place.canary, flip=dict(flip), pod_label=pod_label,
            relabel={ns: relabel[ns] for ns in names if ns in relabel},
            original={ns: _ns_labels(snap, ns) for ns in names if ns in relabel},
            workloads=sum(len(involved[ns]) for ns in names), reason=place.reason, why=place.why))
    flipped = {**canary_flip, **bulk_flip}
    return UpgradePlan(old=old, new=new, mode=mode, stable_tag=stable_tag, canary_tag=canary_tag, waves=waves,
                       tags_before={t: tags.get(t) if t != "default" else default_rev for t in sorted(flipped)},
                       bulk_flip=bulk_flip, canary_flip=canary_flip, first_restore=first_restore)


def wave_from_dict(data: dict[str, Any]) -> WavePlan:
    return WavePlan(**data)
