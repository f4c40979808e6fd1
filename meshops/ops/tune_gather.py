"""Usage of istiod, the gateways and every istio-proxy from Prometheus, in a fixed number of queries.

Each query selects all the containers at once and groups by ``(namespace, pod, container)``,
so a mesh of 20 pods and one of 20,000 cost the same eight queries:

====  ========================================================================
1-3   CPU: the request percentile and the limit percentile of
      ``rate(container_cpu_usage_seconds_total[5m])`` sampled every 5 minutes over the
      window (a subquery), then ``max by (namespace, pod, container)``; and the number of
      those 5-minute points that have data.
4-6   memory: the same of ``max_over_time(container_memory_working_set_bytes[5m])``
      (the 5-minute peak, so a spike between two samples is not missed).
7-8   what is set now: ``kube_pod_container_resource_requests`` / ``_limits``
      (kube-state-metrics) at the end of the window; absent means "unknown", never zero.
====  ========================================================================

"5 minutes" is the default resolution (``Scope.step_seconds``, ``--resolution``); for windows
longer than 3.5 days ``--resolution auto`` (the CLI's default) coarsens it to keep about a
thousand points per series (``resolution_for``): the cost of a query grows with window /
resolution, not with the number of pods.

Pods are folded into workloads here (``workload_of``): a workload's percentile is its
busiest pod's, its sample count the sum over its pods.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from meshops.domain import tuning
from meshops.domain.tuning import NotEnoughData, Policy, Recommendation, Resources, Role, Usage, Verdict
from meshops.drivers.prometheus_api import NoData, PrometheusApi, Sample, finite

CONTAINERS = ("istio-proxy", "discovery")  # discovery: istiod's container
STEP_SECONDS = 300  # the default rate window and subquery resolution
# The points per series a window needs: a week at 10 minutes. Percentiles of a thousand points
# are as steady as those of more, and query cost grows with points (window / step). Up to 3.5
# days this keeps the 5-minute default, so those windows are tuned exactly as before.
MAX_POINTS = 1008


def resolution_for(window_seconds: float) -> int:
    """The resolution (and rate window) for ``--resolution auto``: 5 minutes, or the smallest
    multiple of 5 minutes giving at most MAX_POINTS points over the window (7d -> 10m, 30d -> 45m)."""
    return max(STEP_SECONDS, math.ceil(window_seconds / MAX_POINTS / STEP_SECONDS) * STEP_SECONDS)


@dataclass(frozen=True, kw_only=True)
class Scope:
    window_seconds: float
    until: float | None = None  # unix seconds; None: now
    namespaces: tuple[str, ...] = ()  # sidecars in these namespaces only; () = all
    istio_namespace: str = "istio-system"
    # The rate/peak window and the subquery resolution: usage is one point per step. Query
    # cost grows with window / step; a coarser step smooths short peaks.
    step_seconds: int = STEP_SECONDS


Key = tuple[str, str, str]  # namespace, workload, container


@dataclass(frozen=True, kw_only=True)
class WorkloadRow:
    namespace: str
    workload: str
    container: str
    role: Role
    pods: int | None  # running now, per kube-state-metrics; None when unknown
    usage: Usage
    current: Resources
    result: Recommendation | NotEnoughData
    # What the tuning would set: the workload's own recommendation (control plane, gateways,
    # sidecar outliers) or the global proxy default (other sidecars).
    effective: Resources | None = None
    verdict: Verdict | None = None
    annotate: bool = False  # a sidecar outlier: gets its own annotations


@dataclass(kw_only=True)
class TuneReport:
    scope: Scope
    policy: Policy
    until: float
    rows: list[WorkloadRow]
    queries: int
    control_plane: Resources | None = None
    gateways: dict[str, Resources] = field(default_factory=dict)
    proxy_default: Resources | None = None
    seconds: float = 0.0


def _regex_alt(values: Sequence[str]) -> str:
    """An RE2 alternation of literal values, written as the inside of a PromQL string."""
    regex = "|".join(re.sub(r"([.+*?()|\[\]{}^$\\])", r"\\\1", v) for v in values)
    return regex.replace("\\", "\\\\").replace('"', '\\"')


def selector(scope: Scope) -> str:
    parts = [f'container=~"{_regex_alt(CONTAINERS)}"', 'pod!=""']
    if scope.namespaces:
        parts.append(f'namespace=~"{_regex_alt(sorted({scope.istio_namespace, *scope.namespaces}))}"')
    return "{" + ", ".join(parts) + "}"


def build_queries(scope: Scope, policy: Policy) -> dict[str, str]:
    """The eight PromQL expressions, by name. Pure: the tests read them."""
    sel = selector(scope)
    step = int(scope.step_seconds)
    rng = f"[{int(scope.window_seconds)}s:{step}s]"
    # Aggregations stay outside the subquery: one per result series, not one per evaluation
    # step. A container restarted in the window has several series; its busiest one counts.
    cpu = f"rate(container_cpu_usage_seconds_total{sel}[{step}s]){rng}"
    mem = f"max_over_time(container_memory_working_set_bytes{sel}[{step}s]){rng}"
    # The counts are over the very points the percentiles are over. (Counting the bare
    # selector's points is ~20% cheaper at a 5m step but pathologically slow at a step
    # longer than Prometheus's 5m lookback: measured 10 s instead of 2.5 s at 10m over 7d.)
    q, lq = policy.percentile / 100, policy.limit_percentile / 100
    ksm = sel[:-1] + ', resource=~"cpu|memory"}'
    by = "by (namespace, pod, container)"
    return {
        "cpu_p": f"max {by} (quantile_over_time({q:g}, {cpu}))",
        "cpu_lp": f"max {by} (quantile_over_time({lq:g}, {cpu}))",
        "cpu_n": f"sum {by} (count_over_time({cpu}))",
        "mem_p": f"max {by} (quantile_over_time({q:g}, {mem}))",
        "mem_lp": f"max {by} (quantile_over_time({lq:g}, {mem}))",
        "mem_n": f"sum {by} (count_over_time({mem}))",
        "requests": f"kube_pod_container_resource_requests{ksm}",
        "limits": f"kube_pod_container_resource_limits{ksm}",
    }


def role_of(namespace: str, container: str, scope: Scope) -> Role:
    if container == "discovery":
        return "control-plane"
    return "gateway" if namespace == scope.istio_namespace else "sidecar"


def gather(prom: PrometheusApi, scope: Scope, policy: Policy, *,
           clock: Callable[[], float] = time.time, parallel: int = 8) -> TuneReport:
    """Query, fold pods into workloads, recommend. Raises NoData when the window holds no usage."""
    started = time.monotonic()
    until = float(scope.until if scope.until is not None else math.floor(clock()))
    exprs = build_queries(scope, policy)
    before = prom.queries

    def run(name: str) -> list[Sample]:
        return finite(prom.query(exprs[name], at=until, allow_empty=True))

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="tune-query") as pool:
        futures = {name: pool.submit(run, name) for name in exprs}
        results = {name: f.result() for name, f in futures.items()}
    if not any(results[n] for n in ("cpu_p", "cpu_n", "mem_p", "mem_n")):
        span = f"{_fmt(until - scope.window_seconds)} .. {_fmt(until)}"
        raise NoData(f"no data: Prometheus at {prom.url} has no CPU or memory usage of istiod, gateways or "
                      f"istio-proxy containers{' in namespaces ' + ', '.join(scope.namespaces) if scope.namespaces else ''}"
                      f" in the window {span}",
                      hint="is cAdvisor (the kubelet's /metrics/cadvisor) scraped, and does --window/--until "
                           "cover a time when the mesh ran?")
    rows = fold(results, scope, policy)
    report = TuneReport(scope=scope, policy=policy, until=until, rows=rows, queries=prom.queries - before)
    summarize(report)
    report.seconds = time.monotonic() - started
    return report


def _fmt(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def fold(results: dict[str, list[Sample]], scope: Scope, policy: Policy) -> list[WorkloadRow]:
    """Per-pod series into per-workload rows with their recommendation. Pure."""
    per: dict[str, dict[Key, float]] = {}
    for name in ("cpu_p", "cpu_lp", "mem_p", "mem_lp"):
        agg: dict[Key, float] = {}
        for s in results.get(name, []):
            k = _key(s)
            agg[k] = max(agg.get(k, s.value), s.value)
        per[name] = agg
    counts: dict[str, dict[Key, int]] = {}
    for name in ("cpu_n", "mem_n"):
        cagg: dict[Key, int] = defaultdict(int)
        for s in results.get(name, []):
            cagg[_key(s)] += round(s.value)
        counts[name] = cagg
    current, pods = _current(results.get("requests", []), results.get("limits", []))
    keys = set().union(*per.values(), *counts.values())
    if scope.namespaces:
        allowed = {*scope.namespaces, scope.istio_namespace}
        keys = {k for k in keys if k[0] in allowed}
    rows = []
    for key in sorted(keys):
        ns, wl, container = key
        usage = Usage(cpu_p=per["cpu_p"].get(key), cpu_lp=per["cpu_lp"].get(key), cpu_samples=counts["cpu_n"].get(key, 0),
                      memory_p=per["mem_p"].get(key), memory_lp=per["mem_lp"].get(key),
                      memory_samples=counts["mem_n"].get(key, 0))
        role = role_of(ns, container, scope)
        result = tuning.recommend(usage, role, policy)
        rows.append(WorkloadRow(namespace=ns, workload=wl, container=container, role=role, pods=pods.get(key),
                                usage=usage, current=current.get(key, Resources()), result=result))
    return rows


def _key(s: Sample) -> Key:
    pod = s.labels.get("pod", "")
    return (s.labels.get("namespace", ""), tuning.workload_of(pod), s.labels.get("container", ""))


def _current(requests: list[Sample], limits: list[Sample]) -> tuple[dict[Key, Resources], dict[Key, int]]:
    """What is set now, per workload (the largest over its pods), and how many pods it runs."""
    values: dict[Key, dict[str, float]] = defaultdict(dict)
    pods: dict[Key, set[str]] = defaultdict(set)
    for section, samples in (("requests", requests), ("limits", limits)):
        for s in samples:
            key = _key(s)
            pods[key].add(s.labels.get("pod", ""))
            name = f"{section}.{s.labels.get('resource', '')}"
            values[key][name] = max(values[key].get(name, s.value), s.value)
    out = {}
    for key, v in values.items():
        out[key] = Resources(
            cpu_request_m=tuning.millicores(v["requests.cpu"]) if "requests.cpu" in v else None,
            cpu_limit_m=tuning.millicores(v["limits.cpu"]) if "limits.cpu" in v else None,
            memory_request_mi=tuning.mebibytes(v["requests.memory"]) if "requests.memory" in v else None,
            memory_limit_mi=tuning.mebibytes(v["limits.memory"]) if "limits.memory" in v else None)
    return out, {k: len(v) for k, v in pods.items()}


def summarize(report: TuneReport) -> None:
    """Control-plane and gateway settings, the global proxy default, the outliers, and each verdict."""
    recs = [(r, r.result.resources) for r in report.rows if isinstance(r.result, Recommendation)]
    cps = [res for r, res in recs if r.role == "control-plane"]
    if cps:
        # Several istiod revisions: size every one for the busiest.
        report.control_plane = Resources(
            cpu_request_m=max(c.cpu_request_m or 0 for c in cps), cpu_limit_m=max(c.cpu_limit_m or 0 for c in cps),
            memory_request_mi=max(c.memory_request_mi or 0 for c in cps),
            memory_limit_mi=max(c.memory_limit_mi or 0 for c in cps))
    report.gateways = {r.workload: res for r, res in recs if r.role == "gateway"}
    report.proxy_default = tuning.proxy_default([res for r, res in recs if r.role == "sidecar"], report.policy)
    for i, r in enumerate(report.rows):
        if not isinstance(r.result, Recommendation):
            continue
        own = r.result.resources
        annotate = False
        if r.role == "control-plane":
            effective = report.control_plane or own
        elif r.role == "sidecar" and report.proxy_default is not None:
            annotate = tuning.is_outlier(own, report.proxy_default, report.policy)
            effective = own if annotate else report.proxy_default
        else:
            effective = own
        verdict = tuning.assess(r.current, effective, r.usage, r.pods or 1)
        report.rows[i] = dataclasses.replace(r, effective=effective, verdict=verdict, annotate=annotate)
