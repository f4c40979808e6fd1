"""The usage the tune tests backfill, shaped so that every percentile can be computed by hand.

Time is cut in 5-minute buckets aligned on the epoch (the subquery's evaluation points).
Inside bucket i a pod burns CPU at a constant rate r_i and holds memory m_i; samples fall
at 15 s and 45 s past each half-minute, so no sample sits on a bucket edge. Then at every
evaluation point b, ``rate(...[5m])`` is exactly the r_i of the bucket ending at b and
``max_over_time(...[5m])`` is exactly its m_i (Prometheus 2 and 3 alike), and
``quantile_over_time`` sees one value per bucket.

Data covers the DATA_BUCKETS buckets before END (10 h); the tests tune a 12 h window
ending at END, so the evaluation points before the data simply have no value.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.prom_fixture import OpenMetrics

STEP = 300
END = 1_700_000_100  # a multiple of 300: 2023-11-14T22:15:00Z
DATA_BUCKETS = 120
START = END - DATA_BUCKETS * STEP
MIB = 1024 * 1024
BASE_CPU_SECONDS = 5000.0  # counters start high, so rate() never extrapolates to below zero

Rate = Callable[[int], float]


def _points(bucket_values: Callable[[int], float], buckets: range, *, counter: bool) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    total = BASE_CPU_SECONDS
    for i in buckets:
        b0 = START + i * STEP
        for k in range(10):
            t = b0 + 15 + 30 * k
            if counter:
                # the value at t: everything burnt in earlier buckets plus this bucket so far
                out.append((t, total + bucket_values(i) * (15 + 30 * k)))
            else:
                out.append((t, bucket_values(i)))
        if counter:
            total += bucket_values(i) * STEP
    return out


def pod(om: OpenMetrics, namespace: str, name: str, container: str, *, cpu: Rate | None, mem_mib: Rate | None,
        buckets: range = range(DATA_BUCKETS)) -> None:
    labels = {"namespace": namespace, "pod": name, "container": container, "image": "docker.io/istio/proxyv2"}
    if cpu is not None:
        om.counter("container_cpu_usage_seconds", labels, _points(cpu, buckets, counter=True))
    if mem_mib is not None:
        om.gauge("container_memory_working_set_bytes", labels,
                 _points(lambda i: mem_mib(i) * MIB, buckets, counter=False))


def ksm(om: OpenMetrics, namespace: str, name: str, container: str, *, cpu_req: float, mem_req_mib: float,
        cpu_lim: float | None, mem_lim_mib: float | None) -> None:
    """kube-state-metrics' view of what is set, for the last 10 minutes before END."""
    times = [END - 600 + 15 + 30 * k for k in range(20)]
    base = {"namespace": namespace, "pod": name, "container": container}
    for family, resource, value, unit in (
            ("kube_pod_container_resource_requests", "cpu", cpu_req, "core"),
            ("kube_pod_container_resource_requests", "memory", mem_req_mib * MIB, "byte"),
            ("kube_pod_container_resource_limits", "cpu", cpu_lim, "core"),
            ("kube_pod_container_resource_limits", "memory", None if mem_lim_mib is None else mem_lim_mib * MIB, "byte")):
        if value is not None:
            om.gauge(family, {**base, "resource": resource, "unit": unit}, [(t, value) for t in times])


def build() -> str:
    om = OpenMetrics()
    # shop/cart, two pods: one ramps 1m..120m CPU and 64..183 MiB, one is flat.
    pod(om, "shop", "cart-7d9f8c6b5-bcdfg", "istio-proxy", cpu=lambda i: 0.001 * (i + 1), mem_mib=lambda i: 64 + i)
    pod(om, "shop", "cart-7d9f8c6b5-hjklm", "istio-proxy", cpu=lambda i: 0.05, mem_mib=lambda i: 100)
    pod(om, "shop", "web-5c6d7f8b9-xq2zr", "istio-proxy", cpu=lambda i: 0.02, mem_mib=lambda i: 40)
    pod(om, "shop", "api-6f7b8c9d5-r8tnv", "istio-proxy", cpu=lambda i: 0.03, mem_mib=lambda i: 50)
    pod(om, "pay", "ledger-0", "istio-proxy", cpu=lambda i: 0.025, mem_mib=lambda i: 45)
    pod(om, "pay", "batch-8d9f6c7b4-wz9kd", "istio-proxy", cpu=lambda i: 0.5, mem_mib=lambda i: 400)
    # Sparse: only the last 30 buckets. Missing series: CPU but no memory.
    pod(om, "shop", "sparse-7b8c9d6f5-m2n4p", "istio-proxy", cpu=lambda i: 0.01, mem_mib=lambda i: 30,
        buckets=range(DATA_BUCKETS - 30, DATA_BUCKETS))
    pod(om, "shop", "nomem-9c8b7d6f5-t5v7w", "istio-proxy", cpu=lambda i: 0.01, mem_mib=None)
    # The control plane and a gateway.
    pod(om, "istio-system", "istiod-5d8f7c9b6-kzx4t", "discovery", cpu=lambda i: 0.2, mem_mib=lambda i: 300)
    pod(om, "istio-system", "istio-ingressgateway-6b7d9c8f5-q2w4x", "istio-proxy", cpu=lambda i: 0.3,
        mem_mib=lambda i: 80)
    # Containers tune must ignore: the application container and the pod-level cgroup.
    pod(om, "shop", "cart-7d9f8c6b5-bcdfg", "cart", cpu=lambda i: 3.0, mem_mib=lambda i: 3000)
    pod(om, "shop", "cart-7d9f8c6b5-bcdfg", "", cpu=lambda i: 3.5, mem_mib=lambda i: 3500)
    # What is set now (kube-state-metrics); ledger has no series: "unknown".
    for name in ("cart-7d9f8c6b5-bcdfg", "cart-7d9f8c6b5-hjklm"):
        ksm(om, "shop", name, "istio-proxy", cpu_req=0.1, mem_req_mib=128, cpu_lim=2.0, mem_lim_mib=1024)
    ksm(om, "shop", "web-5c6d7f8b9-xq2zr", "istio-proxy", cpu_req=0.1, mem_req_mib=128, cpu_lim=2.0, mem_lim_mib=1024)
    ksm(om, "pay", "batch-8d9f6c7b4-wz9kd", "istio-proxy", cpu_req=0.1, mem_req_mib=128, cpu_lim=2.0,
        mem_lim_mib=256)
    ksm(om, "istio-system", "istiod-5d8f7c9b6-kzx4t", "discovery", cpu_req=0.5, mem_req_mib=2048, cpu_lim=None,
        mem_lim_mib=None)
    return om.text()
