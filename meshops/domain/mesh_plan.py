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
the revision keeps its name and gets a new version) only restarts.
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


def plan_upgrade(snap: MeshSnapshot, *, old: str, new: str, mode: str = "tags", first: list[str] | None = None,
                 wave_size: int = 10, stable_tag: str = "prod-stable", canary_tag: str = "prod-canary") -> UpgradePlan:
    if wave_size < 1:
        raise PlanError("wave size must be at least 1")
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

    waves: list[WavePlan] = []

    def add_wave(names: list[str], *, canary: bool, flip: dict[str, str]) -> None:
        pod_label = {"relabel": new, "restart": ""}.get(mode) or (canary_tag if canary else stable_tag)
        waves.append(WavePlan(
            index=len(waves), namespaces=names, canary=canary, flip=flip, pod_label=pod_label,
            relabel={ns: relabel[ns] for ns in names if ns in relabel},
            original={ns: _ns_labels(snap, ns) for ns in names if ns in relabel},
            workloads=sum(len(involved[ns]) for ns in names)))

    if first:
        add_wave(first, canary=True, flip=dict(canary_flip))
    for i in range(0, len(rest), wave_size):
        add_wave(rest[i:i + wave_size], canary=False, flip=dict(bulk_flip) if i == 0 else {})
    flipped = {**canary_flip, **bulk_flip}
    return UpgradePlan(old=old, new=new, mode=mode, stable_tag=stable_tag, canary_tag=canary_tag, waves=waves,
                       tags_before={t: tags.get(t) if t != "default" else default_rev for t in sorted(flipped)},
                       bulk_flip=bulk_flip, canary_flip=canary_flip, first_restore=first_restore)


def wave_from_dict(data: dict[str, Any]) -> WavePlan:
    return WavePlan(**data)
