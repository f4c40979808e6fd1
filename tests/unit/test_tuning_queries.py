"""meshops.ops.tune_gather against FakePrometheus: fixed query count, folding, errors."""

from __future__ import annotations

import re

import pytest
import yaml

from meshops.domain.errors import DriverError
from meshops.domain.tuning import MIB, NotEnoughData, Policy, Recommendation
from meshops.drivers.prometheus import NoData, Sample
from meshops.drivers.prometheus_fake import FakePrometheus, UnplannedQuery
from meshops.ops import tune_report
from meshops.ops.tune_gather import Scope, build_queries, gather

SCOPE = Scope(window_seconds=7 * 86400, until=1_700_000_100)


def fake_for(workloads: int, pods: int = 2) -> FakePrometheus:
    """A Prometheus that knows `workloads` sidecar workloads of `pods` pods each, plus istiod."""
    def series(value: float) -> list[Sample]:
        out = [Sample(labels={"namespace": "istio-system", "pod": "istiod-5d8f7c9b6-kzx4t", "container": "discovery"},
                      value=value * 4)]
        for w in range(workloads):
            for p in range(pods):
                out.append(Sample(labels={"namespace": f"ns{w % 7}", "pod": f"app{w}-5c6d7f8b9-{'bcdfg'[p]}zrqx",
                                          "container": "istio-proxy"}, value=value))
        return out

    return FakePrometheus({
        re.compile(r"quantile_over_time\(0\.95, rate"): series(0.02),
        re.compile(r"quantile_over_time\(0\.99, rate"): series(0.03),
        re.compile(r"count_over_time\(rate"): series(200),
        re.compile(r"quantile_over_time\(0\.95, max_over_time"): series(40 * MIB),
        re.compile(r"quantile_over_time\(0\.99, max_over_time"): series(50 * MIB),
        re.compile(r"count_over_time\(max_over_time"): series(200),
        re.compile(r"^kube_pod_container_resource_(requests|limits)"): [],
    })


@pytest.mark.parametrize("workloads", [3, 300])
def test_query_count_does_not_grow_with_workloads(workloads: int) -> None:
    """3 or 300 workloads (6 or 600 pods): the same eight queries, all at the window's end."""
    prom = fake_for(workloads)
    report = gather(prom, SCOPE, Policy())
    assert report.queries == 8 == len(prom.calls)
    assert {params["at"] for _, params in prom.calls} == {1_700_000_100.0}
    assert sum(1 for r in report.rows if r.role == "sidecar") == workloads


def test_pods_fold_into_workloads_with_samples_summed() -> None:
    """Two pods of 200 samples each make one workload of 400 samples."""
    report = gather(fake_for(1), SCOPE, Policy())
    row = next(r for r in report.rows if r.workload == "app0")
    assert row.usage.cpu_samples == 400
    assert isinstance(row.result, Recommendation)
    assert row.result.resources.cpu_request_m == 23  # 0.02 x 1.15


def test_queries_group_by_label_and_select_only_mesh_containers() -> None:
    """Every usage query groups by (namespace, pod, container) and selects istio-proxy and discovery."""
    queries = build_queries(Scope(window_seconds=43200, namespaces=("shop",)), Policy())
    assert len(queries) == 8
    for name in ("cpu_p", "cpu_lp", "cpu_n", "mem_p", "mem_lp", "mem_n"):
        assert "by (namespace, pod, container)" in queries[name]
        assert '[43200s:300s]' in queries[name]
    for q in queries.values():
        assert 'container=~"istio-proxy|discovery"' in q
        assert 'namespace=~"istio-system|shop"' in q


def test_resolution_sets_the_rate_window_and_the_subquery_step() -> None:
    """--resolution 10m: rate over 10m, one point every 10m."""
    q = build_queries(Scope(window_seconds=7 * 86400, step_seconds=600), Policy())
    assert "rate(container_cpu_usage_seconds_total" in q["cpu_p"] and "[600s])[604800s:600s]" in q["cpu_p"]
    assert "[600s])[604800s:600s]" in q["mem_lp"] and q["mem_n"].endswith("[600s])[604800s:600s]))")


def test_namespace_values_are_escaped_for_promql() -> None:
    """A dot in a namespace is a literal in the regex, written as a PromQL string escape."""
    q = build_queries(Scope(window_seconds=600, namespaces=("a.b",)), Policy())["cpu_p"]
    assert 'namespace=~"a\\\\.b|istio-system"' in q


def test_no_usage_in_window_is_no_data() -> None:
    """All usage queries empty: NoData naming the window, never a recommendation."""
    prom = FakePrometheus({re.compile("."): []})
    with pytest.raises(NoData, match=r"no data: .* in the window 2023-11-07T22:15:00Z \.\. 2023-11-14T22:15:00Z"):
        gather(prom, SCOPE, Policy())


def test_prometheus_down_is_a_driver_error() -> None:
    """An unreachable Prometheus fails with its reason, temporary."""
    with pytest.raises(DriverError, match="connection refused") as info:
        gather(FakePrometheus(down=True), SCOPE, Policy())
    assert info.value.temporary


def test_missing_memory_series_is_not_enough_data() -> None:
    """A workload with CPU series but no memory series is reported, not guessed."""
    prom = fake_for(1)
    prom.responses = {k: ([s for s in v if s.labels.get("container") != "istio-proxy"]
                          if isinstance(k, re.Pattern) and ("max_over_time" in k.pattern
                                                              or "container_memory" in k.pattern) else v)
                      for k, v in prom.responses.items()}
    report = gather(prom, SCOPE, Policy())
    row = next(r for r in report.rows if r.workload == "app0")
    assert isinstance(row.result, NotEnoughData)
    assert row.result.reason == "not enough data (no memory series)"
    assert report.proxy_default is None


def test_fake_refuses_unplanned_queries() -> None:
    """FakePrometheus fails loudly on a query the test did not plan."""
    with pytest.raises(UnplannedQuery):
        FakePrometheus({}).query("up")


def test_report_documents() -> None:
    """The overlay sets istiod and the proxy default; it passes the IstioOperator model."""
    report = gather(fake_for(2), SCOPE, Policy())
    text = tune_report.render_yaml(report, "http://prom:9090")
    overlay, annotations = list(yaml.safe_load_all(text))
    assert overlay["kind"] == "IstioOperator"
    assert overlay["spec"]["components"]["pilot"]["k8s"]["resources"]["requests"] == {"cpu": "92m", "memory": "184Mi"}
    assert overlay["spec"]["values"]["global"]["proxy"]["resources"]["requests"] == {"cpu": "23m", "memory": "46Mi"}
    assert annotations["kind"] == "ProxyResourceAnnotations" and annotations["workloads"] == []
    table = tune_report.render_table(report)
    assert "8 Prometheus queries" in table and "ns0/app0" in table


def test_auto_resolution_keeps_about_a_thousand_points_and_short_windows_unchanged() -> None:
    """`--resolution auto`: 5m up to 3.5 days (the very queries of before), then coarser."""
    from meshops.ops.tune_gather import resolution_for

    assert [resolution_for(d * 86400) for d in (0.5, 1, 3.5, 4, 7, 14, 30)] == [300, 300, 300, 600, 600, 1200, 2700]
    for days in (0.5, 1, 2, 3.5):
        scope = Scope(window_seconds=days * 86400, until=1_700_000_100)
        auto = Scope(window_seconds=days * 86400, until=1_700_000_100, step_seconds=resolution_for(days * 86400))
        assert build_queries(auto, Policy()) == build_queries(scope, Policy())
    week = build_queries(Scope(window_seconds=7 * 86400, step_seconds=resolution_for(7 * 86400)), Policy())
    assert "[604800s:600s]" in week["cpu_p"] and "[600s])" in week["cpu_p"]
