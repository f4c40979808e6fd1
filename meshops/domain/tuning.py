"""Resource recommendations from observed usage, as the VPA recommender and KRR make them.

Everything here is a pure function of numbers, so every recommendation can be checked by
hand:

* request = ceil(percentile(usage, p) x (1 + margin)), then floor and cap;
* limit   = ceil(percentile(usage, limit_p) x (1 + headroom)), floor, cap, never below the request;
* fewer than ``min_samples`` usage points (per resource, summed over the workload's pods) is
  "not enough data", never a number.

CPU is in cores and rounded up to whole millicores; memory is in bytes and rounded up to
whole MiB. The percentiles themselves come from Prometheus (``quantile_over_time``, which
interpolates linearly between ranks); ``quantile`` below is the same formula, for tests
and for the proxy default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["control-plane", "gateway", "sidecar"]
MIB = 1024 * 1024

# Kubernetes names generated pods' suffixes from this alphabet (no vowels, no 0/1/3:
# k8s.io/apimachinery/pkg/util/rand.SafeEncodeString), which tells a ReplicaSet hash from
# a word in a workload's name.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_DEPLOYMENT_POD = re.compile(rf"^(?P<w>.+)-[{_SAFE}]{{6,10}}-[{_SAFE}]{{5}}$")
_DAEMONSET_POD = re.compile(rf"^(?P<w>.+)-[{_SAFE}]{{5}}$")
_STATEFULSET_POD = re.compile(r"^(?P<w>.+)-\d+$")


def workload_of(pod: str) -> str:
    """The workload a pod belongs to, from its generated name (Deployment, DaemonSet, StatefulSet)."""
    for pattern in (_DEPLOYMENT_POD, _DAEMONSET_POD, _STATEFULSET_POD):
        m = pattern.match(pod)
        if m:
            return m.group("w")
    return pod


# ---- quantities ---------------------------------------------------------------------------

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)$")
_MEM_SCALE = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_cpu(text: str | float) -> float:
    """A CPU quantity (``250m``, ``0.5``, ``2``) in cores. Raises ValueError otherwise."""
    m = _CPU.match(str(text).strip())
    if not m:
        raise ValueError(f"not a CPU quantity: {text!r} (expected e.g. 250m or 0.5)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) else value


def parse_memory(text: str | float) -> float:
    """A memory quantity (``128Mi``, ``1Gi``, ``500M``, bytes) in bytes. Raises ValueError otherwise."""
    m = _MEM.match(str(text).strip())
    if not m:
        raise ValueError(f"not a memory quantity: {text!r} (expected e.g. 128Mi or 1Gi)")
    return float(m.group(1)) * _MEM_SCALE[m.group(2)]


def _ceil(x: float) -> int:
    # Round up, but not for float noise: 0.3 x 1.15 x 1000 is 345.00000000000006, not 346.
    return math.ceil(x - 1e-9 * max(1.0, abs(x)))


def millicores(cores: float) -> int:
    return _ceil(cores * 1000)


def mebibytes(nbytes: float) -> int:
    return _ceil(nbytes / MIB)


def quantile(values: Sequence[float], q: float) -> float:
    """PromQL's ``quantile``: linear interpolation between ranks, q in [0, 1]."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (an observed value, never interpolated), q in (0, 1]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---- policy -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """Floors and caps for one role, in millicores and MiB."""

    cpu_floor_m: int
    cpu_cap_m: int
    memory_floor_mi: int
    memory_cap_mi: int


DEFAULT_BOUNDS: dict[Role, Bounds] = {
    # istiod: the upstream chart requests 500m/2Gi; below 50m/128Mi it cannot push config.
    "control-plane": Bounds(cpu_floor_m=50, cpu_cap_m=8000, memory_floor_mi=128, memory_cap_mi=16384),
    # Gateways are Envoys that carry all north-south traffic.
    "gateway": Bounds(cpu_floor_m=10, cpu_cap_m=4000, memory_floor_mi=40, memory_cap_mi=4096),
    # Sidecars: Istio's own defaults are 100m/128Mi requests and 2000m/1024Mi limits.
    "sidecar": Bounds(cpu_floor_m=10, cpu_cap_m=2000, memory_floor_mi=32, memory_cap_mi=1024),
}


@dataclass(frozen=True, kw_only=True)
class Policy:
    percentile: float = 95.0  # requests
    limit_percentile: float = 99.0  # limits
    cpu_margin: float = 0.15  # the VPA recommender's safety margin
    memory_margin: float = 0.15
    limit_headroom: float = 0.30
    min_samples: int = 100
    bounds: dict[Role, Bounds] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))
    # A sidecar whose recommended request differs from the global default by more than
    # this fraction, or whose limit is above the default limit, gets its own annotations.
    outlier_tolerance: float = 0.30
    # The global proxy default: the median recommended request, and this nearest-rank
    # percentile of the recommended limits, over the sidecars with enough data.
    default_limit_quantile: float = 0.90

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], not {self.percentile:g}")
        if not self.percentile <= self.limit_percentile <= 100:
            raise ValueError(f"limit percentile ({self.limit_percentile:g}) must be between the request "
                             f"percentile ({self.percentile:g}) and 100")
        if self.min_samples < 1:
            raise ValueError("min_samples must be >= 1")
        for name in ("cpu_margin", "memory_margin", "limit_headroom", "outlier_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


# ---- recommendations ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What Prometheus says about one workload's container over the window.

    ``*_p`` is the request percentile, ``*_lp`` the limit percentile, the worst pod of the
    workload in each case; ``*_samples`` counts usage points summed over its pods. None:
    no series at all.
    """

    cpu_p: float | None = None
    cpu_lp: float | None = None
    cpu_samples: int = 0
    memory_p: float | None = None
    memory_lp: float | None = None
    memory_samples: int = 0


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Requests and limits in millicores and MiB (None: not set, or not known)."""

    cpu_request_m: int | None = None
    cpu_limit_m: int | None = None
    memory_request_mi: int | None = None
    memory_limit_mi: int | None = None

    def as_k8s(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for section, cpu, mem in (("requests", self.cpu_request_m, self.memory_request_mi),
                                  ("limits", self.cpu_limit_m, self.memory_limit_mi)):
            entry = {}
            if cpu is not None:
                entry["cpu"] = f"{cpu}m"
            if mem is not None:
                entry["memory"] = f"{mem}Mi"
            if entry:
                out[section] = entry
        return out

    def as_annotations(self) -> dict[str, str]:
        assert None not in (self.cpu_request_m, self.cpu_limit_m, self.memory_request_mi, self.memory_limit_mi)
        return {
            "sidecar.istio.io/proxyCPU": f"{self.cpu_request_m}m",
            "sidecar.istio.io/proxyCPULimit": f"{self.cpu_limit_m}m",
            "sidecar.istio.io/proxyMemory": f"{self.memory_request_mi}Mi",
            "sidecar.istio.io/proxyMemoryLimit": f"{self.memory_limit_mi}Mi",
        }


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    resources: Resources
    capped: tuple[str, ...] = ()  # which values hit the cap (usage may exceed them)


@dataclass(frozen=True, kw_only=True)
class NotEnoughData:
    reason: str


def _bounded(value: int, floor: int, cap: int, name: str, capped: list[str]) -> int:
    if value > cap:
        capped.append(name)
        return cap
    return max(value, floor)


def recommend(usage: Usage, role: Role, policy: Policy) -> Recommendation | NotEnoughData:
    """Requests and limits for one workload's container, or why there is no recommendation."""
    problems = []
    for name, p, lp, samples in (("cpu", usage.cpu_p, usage.cpu_lp, usage.cpu_samples),
                                 ("memory", usage.memory_p, usage.memory_lp, usage.memory_samples)):
        if p is None or lp is None or samples == 0:
            problems.append(f"no {name} series")
        elif samples < policy.min_samples:
            problems.append(f"{name}: {samples} samples < {policy.min_samples}")
        elif not (math.isfinite(p) and math.isfinite(lp)) or p < 0 or lp < 0:
            problems.append(f"{name}: usage is not a finite number")
    if problems:
        return NotEnoughData(reason="not enough data (" + "; ".join(problems) + ")")
    assert usage.cpu_p is not None and usage.cpu_lp is not None
    assert usage.memory_p is not None and usage.memory_lp is not None
    b = policy.bounds[role]
    capped: list[str] = []
    cpu_req = _bounded(millicores(usage.cpu_p * (1 + policy.cpu_margin)), b.cpu_floor_m, b.cpu_cap_m,
                       "cpu request", capped)
    cpu_lim = _bounded(millicores(usage.cpu_lp * (1 + policy.limit_headroom)), b.cpu_floor_m, b.cpu_cap_m,
                       "cpu limit", capped)
    mem_req = _bounded(mebibytes(usage.memory_p * (1 + policy.memory_margin)), b.memory_floor_mi,
                       b.memory_cap_mi, "memory request", capped)
    mem_lim = _bounded(mebibytes(usage.memory_lp * (1 + policy.limit_headroom)), b.memory_floor_mi,
                       b.memory_cap_mi, "memory limit", capped)
    return Recommendation(resources=Resources(cpu_request_m=cpu_req, cpu_limit_m=max(cpu_lim, cpu_req),
                                              memory_request_mi=mem_req, memory_limit_mi=max(mem_lim, mem_req)),
                          capped=tuple(capped))


def proxy_default(recommended: Sequence[Resources], policy: Policy) -> Resources | None:
    """The global sidecar default: median requests, a high nearest-rank percentile of limits."""
    if not recommended:
        return None

    def pick(values: list[int], q: float) -> int:
        return int(nearest_rank(values, q))

    cpu_req = pick([r.cpu_request_m for r in recommended if r.cpu_request_m is not None], 0.5)
    mem_req = pick([r.memory_request_mi for r in recommended if r.memory_request_mi is not None], 0.5)
    cpu_lim = pick([r.cpu_limit_m for r in recommended if r.cpu_limit_m is not None], policy.default_limit_quantile)
    mem_lim = pick([r.memory_limit_mi for r in recommended if r.memory_limit_mi is not None],
                   policy.default_limit_quantile)
    return Resources(cpu_request_m=cpu_req, cpu_limit_m=max(cpu_lim, cpu_req),
                     memory_request_mi=mem_req, memory_limit_mi=max(mem_lim, mem_req))


def is_outlier(rec: Resources, default: Resources, policy: Policy) -> bool:
    """Whether a sidecar needs its own annotations rather than the global default."""
    assert rec.cpu_request_m and rec.memory_request_mi and default.cpu_request_m and default.memory_request_mi
    tol = policy.outlier_tolerance
    if abs(rec.cpu_request_m - default.cpu_request_m) > tol * default.cpu_request_m:
        return True
    if abs(rec.memory_request_mi - default.memory_request_mi) > tol * default.memory_request_mi:
        return True
    return ((rec.cpu_limit_m or 0) > (default.cpu_limit_m or 0)
            or (rec.memory_limit_mi or 0) > (default.memory_limit_mi or 0))


# ---- current against recommended -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Verdict:
    kind: Literal["risk", "saving", "ok", "unknown"]
    text: str
    cpu_saving_m: int = 0  # over all pods; negative: more is needed
    memory_saving_mi: int = 0


def assess(current: Resources, rec: Resources, usage: Usage, pods: int) -> Verdict:
    """Compare what is set with what is recommended: a risk first, else the saving."""
    risks = []
    if usage.cpu_p is not None and current.cpu_request_m is not None and millicores(usage.cpu_p) > current.cpu_request_m:
        risks.append(f"cpu p-usage {millicores(usage.cpu_p)}m > request {current.cpu_request_m}m")
    if usage.memory_lp is not None and current.memory_limit_mi is not None \
            and mebibytes(usage.memory_lp) > current.memory_limit_mi:
        risks.append(f"memory peak {mebibytes(usage.memory_lp)}Mi > limit {current.memory_limit_mi}Mi (OOM)")
    if usage.cpu_lp is not None and current.cpu_limit_m is not None and millicores(usage.cpu_lp) > current.cpu_limit_m:
        risks.append(f"cpu peak {millicores(usage.cpu_lp)}m > limit {current.cpu_limit_m}m (throttled)")
    if current.cpu_request_m is None or current.memory_request_mi is None:
        if risks:
            return Verdict(kind="risk", text="RISK: " + "; ".join(risks))
        return Verdict(kind="unknown", text="current requests unknown")
    assert rec.cpu_request_m is not None and rec.memory_request_mi is not None
    cpu = (current.cpu_request_m - rec.cpu_request_m) * pods
    mem = (current.memory_request_mi - rec.memory_request_mi) * pods
    if risks:
        return Verdict(kind="risk", text="RISK: " + "; ".join(risks), cpu_saving_m=cpu, memory_saving_mi=mem)
    if cpu > 0 or mem > 0:
        parts = [f"{'saves' if v > 0 else 'adds'} {abs(v)}{unit}" for v, unit in ((cpu, "m CPU"), (mem, "Mi"))
                 if v != 0]
        return Verdict(kind="saving", text=", ".join(parts), cpu_saving_m=cpu, memory_saving_mi=mem)
    if cpu < 0 or mem < 0:
        parts = [f"adds {abs(v)}{unit}" for v, unit in ((cpu, "m CPU"), (mem, "Mi")) if v < 0]
        return Verdict(kind="ok", text="needs more: " + ", ".join(parts), cpu_saving_m=cpu, memory_saving_mi=mem)
    return Verdict(kind="ok", text="as recommended")
