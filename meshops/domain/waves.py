"""Which namespaces move in which wave of a canary, and why. Pure: facts in, waves out.

Shape. A bad revision is cheapest to catch in a small first wave; once waves have held,
confidence is high, and every sequential wave costs at least one rollout time however many
workloads restart at once, so later waves should be large (Flagger and Argo Rollouts grow
their steps for the same reason). By default, then: the ``--first`` namespaces (else the
first namespace in order, alone), then each wave ``growth`` times the one before, capped by
``max_wave_size``. ``wave_size`` keeps equal waves for those who want them.

Order. The operator's word first, from a namespace label or annotation (label wins; if both
are set they must agree):

- ``meshops.dev/wave: N`` (N >= 0) puts the namespace in wave N (0 is the first wave, the one
  ``--first`` takes when given). Waves numbered past the end of the plan run last, in order.
- ``meshops.dev/order: N`` (an integer) ranks it: marked namespaces go before unmarked ones,
  lower N first.

then ``order``: ``size`` (fewest workloads to restart, then fewest pods), ``name``, or ``risk``
(namespaces without StatefulSets first, then fewest pods). Namespaces with nothing to restart
(they only select the old revision) go after those with workloads, whatever the order: a first
wave that restarts nothing would prove nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

WAVE_KEY = "meshops.dev/wave"
ORDER_KEY = "meshops.dev/order"
ORDERS = ("size", "name", "risk")
_INTEGER = re.compile(r"[+-]?\d+")


class WaveError(ValueError):
    """The waves cannot be planned as asked (the message names every reason)."""


@dataclass(frozen=True, kw_only=True)
class NamespaceFacts:
    name: str
    workloads: int = 0  # workloads a restart moves
    pods: int = 0  # their live pods
    statefulsets: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class WaveShape:
    growth: float = 2.0
    max_wave_size: int = 0  # 0: no cap
    wave_size: int = 0  # > 0: equal waves of this many namespaces (growth and cap unused)
    order: str = "size"

    def problems(self) -> list[str]:
        out = []
        if not math.isfinite(self.growth) or self.growth < 1:
            out.append(f"growth {self.growth:g}: must be a number of at least 1 (1 keeps waves the size of the first)")
        if self.max_wave_size < 0:
            out.append(f"max wave size {self.max_wave_size}: must be at least 1 (or 0 for no cap)")
        if self.wave_size < 0:
            out.append(f"wave size {self.wave_size}: must be at least 1 (or 0 for growing waves)")
        if self.wave_size and self.max_wave_size:
            out.append("wave size keeps equal waves and max wave size caps growing ones: give one of them")
        if self.order not in ORDERS:
            out.append(f"unknown order {self.order!r} (one of {', '.join(ORDERS)})")
        return out


@dataclass(frozen=True, kw_only=True)
class Placement:
    """One planned wave: its namespaces in order, why it has that many, why each one is in it."""

    namespaces: list[str]
    reason: str
    why: dict[str, str]
    canary: bool = False


@dataclass(frozen=True, kw_only=True)
class _Marks:
    wave: int | None
    order: int | None
    wave_src: str
    order_src: str


def _read_mark(f: NamespaceFacts, key: str, problems: list[str]) -> tuple[int | None, str]:
    label, note = f.labels.get(key), f.annotations.get(key)
    if label is not None and note is not None and label.strip() != note.strip():
        problems.append(f"namespace {f.name}: label {key}={label!r} and annotation {key}={note!r} disagree")
        return None, ""
    raw, where = (label, "label") if label is not None else (note, "annotation")
    if raw is None:
        return None, ""
    if not _INTEGER.fullmatch(raw.strip()):
        problems.append(f"namespace {f.name}: {where} {key}={raw!r} is not a whole number")
        return None, ""
    return int(raw.strip()), f"{where} {key}={int(raw.strip())}"


def _marks(facts: Sequence[NamespaceFacts], problems: list[str]) -> dict[str, _Marks]:
    out = {}
    for f in facts:
        wave, wave_src = _read_mark(f, WAVE_KEY, problems)
        if wave is not None and wave < 0:
            problems.append(f"namespace {f.name}: {wave_src} is negative (waves count from 0)")
            wave = None
        order, order_src = _read_mark(f, ORDER_KEY, problems)
        out[f.name] = _Marks(wave=wave, order=order, wave_src=wave_src, order_src=order_src)
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _criterion(order: str) -> tuple[Callable[[NamespaceFacts], tuple[int, ...]], Callable[[NamespaceFacts], str]]:
    """The sort key ``--order`` adds (after the operator's marks, before the name) and how it reads."""
    if order == "name":
        return (lambda f: ()), (lambda f: "by name")
    if order == "risk":
        return ((lambda f: (f.statefulsets > 0, f.pods, f.workloads)),
                lambda f: f"risk: {_plural(f.statefulsets, 'StatefulSet') if f.statefulsets else 'no StatefulSet'}, "
                          f"{_plural(f.pods, 'pod')}")
    return ((lambda f: (f.workloads, f.pods)),
            lambda f: f"size: {_plural(f.workloads, 'workload')}, {_plural(f.pods, 'pod')}")


def plan_waves(facts: Sequence[NamespaceFacts], *, first: Sequence[str] = (), shape: WaveShape) -> list[Placement]:
    """The waves, ``first`` (already checked to be among ``facts``) as wave 0 when given."""
    problems = shape.problems()
    marks = _marks(facts, problems)
    by_name = {f.name: f for f in facts}
    first = list(dict.fromkeys(first))
    if first:
        problems += [f"namespace {ns}: {marks[ns].wave_src} but --first takes wave 0; name it in --first or "
                     f"give it wave 1 or later" for ns in sorted(marks) if marks[ns].wave == 0 and ns not in first]
    key, describe = _criterion(shape.order)

    def rank(f: NamespaceFacts) -> tuple[object, ...]:
        m = marks[f.name]
        return (f.workloads == 0, m.order is None, m.order or 0, *key(f), f.name)

    pinned: dict[int, list[str]] = {}
    free: list[str] = []
    for f in sorted((f for f in facts if f.name not in first), key=rank):
        wave = marks[f.name].wave
        if wave is None:
            free.append(f.name)
        else:
            pinned.setdefault(wave, []).append(f.name)
    limit, limit_flag = (shape.wave_size, "wave size") if shape.wave_size else (shape.max_wave_size, "max wave size")
    if limit:
        problems += [f"wave {n}: {_plural(len(names), 'namespace')} labelled {WAVE_KEY}={n}, more than the "
                     f"{limit_flag} {limit}" for n, names in sorted(pinned.items()) if len(names) > limit]
    if problems:
        raise WaveError("; ".join(problems))

    def why_free(ns: str, position: int) -> str:
        f, m = by_name[ns], marks[ns]
        parts = [m.order_src] if m.order_src else []
        parts.append(describe(f) if f.workloads else "nothing to restart: after the namespaces with workloads")
        return f"#{position} in order ({', '.join(parts)})"

    waves: list[Placement] = []
    prev = 0
    if first:
        waves.append(Placement(namespaces=first, canary=True, reason="--first: moved before every other namespace",
                               why={ns: "--first" for ns in first}))
        prev = len(first)
    taken = 0
    while free or pinned:
        index = len(waves)
        pins, asked = pinned.pop(index, []), index
        if not pins and not free:  # only waves numbered past the end of the plan are left
            asked = min(pinned)
            pins = pinned.pop(asked)
        if shape.wave_size:
            target, sizing = shape.wave_size, f"equal waves of {shape.wave_size} (wave size)"
        elif not prev:
            target, sizing = 1, "the first namespace in order, alone"
        else:
            raw = math.ceil(prev * shape.growth - 1e-9)
            target = min(raw, shape.max_wave_size) if shape.max_wave_size else raw
            sizing = f"{shape.growth:g} x {prev} = {raw}" + (f", capped at {target} (max wave size)"
                                                               if target < raw else "")
        fill = free[:max(0, target - len(pins))]
        free = free[len(fill):]
        names = pins + fill
        placed = f"{_plural(len(pins), 'namespace')} placed by {WAVE_KEY}={asked}"
        if pins and not fill:
            reason = placed
        else:
            reason = sizing + (f": {placed}, {len(fill)} next in order" if pins else "")
            if len(names) < target:
                reason += f": the last {_plural(len(names), 'namespace')}"
        late = "" if asked == index else f" (moves as wave {index}: the plan ends sooner)"
        why = {ns: marks[ns].wave_src + late for ns in pins}
        for ns in fill:
            taken += 1
            why[ns] = why_free(ns, taken)
        waves.append(Placement(namespaces=names, reason=reason, why=why))
        prev = len(names)
    return waves
