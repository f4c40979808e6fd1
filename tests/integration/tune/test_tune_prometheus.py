"""`meshops tune` against a real Prometheus serving dataset.build(): hand-computed answers, and errors.

Hand computation for shop/cart (see dataset.py): its ramping pod has CPU rates 1m..120m, one
per 5-minute point, 120 points. p95 is rank 0.95 x 119 = 113.05, i.e. 114m + 0.05 x 1m =
0.11405 cores; x 1.15 = 131.16m -> 132m. p99: rank 117.81 -> 0.11881; x 1.3 = 154.5 -> 155m.
Memory 64..183 MiB: p95 177.05 MiB x 1.15 = 203.6 -> 204Mi; p99 181.81 x 1.3 = 236.4 -> 237Mi.
The flat pod (50m, 100 MiB) is below that everywhere, so the workload takes the ramp's values.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshops.domain.errors import DriverError
from meshops.domain.tuning import MIB, NotEnoughData, Policy, Recommendation, Resources
from meshops.drivers.prometheus import BadQuery, NoData, PrometheusClient
from meshops.ops.tune_gather import Scope, gather
from tests.integration.prom_fixture import PromServer, free_port
from tests.integration.tune import dataset

WINDOW = 12 * 3600
SCOPE = Scope(window_seconds=WINDOW, until=dataset.END)


def R(cpu: int, cpu_l: int, mem: int, mem_l: int) -> Resources:
    return Resources(cpu_request_m=cpu, cpu_limit_m=cpu_l, memory_request_mi=mem, memory_limit_mi=mem_l)


# Each line: 1.15 x the flat usage for requests, 1.3 x for limits, rounded up.
EXPECTED = {
    ("istio-system", "istiod"): R(230, 260, 345, 390),
    ("istio-system", "istio-ingressgateway"): R(345, 390, 92, 104),
    ("shop", "cart"): R(132, 155, 204, 237),
    ("shop", "web"): R(23, 26, 46, 52),
    ("shop", "api"): R(35, 39, 58, 65),
    ("pay", "ledger"): R(29, 33, 52, 59),
    ("pay", "batch"): R(575, 650, 460, 520),
}


def meshops(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshops", *argv], capture_output=True, text=True, timeout=120)


def test_recommendations_equal_hand_computed_values(prometheus: PromServer) -> None:
    """Every workload's requests and limits are the values worked out by hand in this file."""
    report = gather(PrometheusClient(prometheus.url), SCOPE, Policy())
    got = {(r.namespace, r.workload): r.result.resources for r in report.rows if isinstance(r.result, Recommendation)}
    assert got == EXPECTED


def test_raw_percentiles_are_the_interpolated_ranks(prometheus: PromServer) -> None:
    """cart's p95/p99 usage is the busiest pod's interpolated rank; its samples add over both pods."""
    report = gather(PrometheusClient(prometheus.url), SCOPE, Policy())
    cart = next(r for r in report.rows if r.workload == "cart")
    assert cart.usage.cpu_p == pytest.approx(0.11405, abs=1e-9)
    assert cart.usage.cpu_lp == pytest.approx(0.11881, abs=1e-9)
    assert cart.usage.memory_p == pytest.approx(177.05 * MIB, rel=1e-12)
    assert cart.usage.memory_lp == pytest.approx(181.81 * MIB, rel=1e-12)
    assert (cart.usage.cpu_samples, cart.usage.memory_samples, cart.pods) == (240, 240, 2)


def test_sparse_and_missing_series_give_no_number(prometheus: PromServer) -> None:
    """30 points of 100 needed, or no memory series at all: 'not enough data', and no annotation."""
    report = gather(PrometheusClient(prometheus.url), SCOPE, Policy())
    by_name = {r.workload: r for r in report.rows}
    assert isinstance(by_name["sparse"].result, NotEnoughData)
    assert by_name["sparse"].result.reason == "not enough data (cpu: 30 samples < 100; memory: 30 samples < 100)"
    assert isinstance(by_name["nomem"].result, NotEnoughData)
    assert by_name["nomem"].result.reason == "not enough data (no memory series)"
    assert not by_name["sparse"].annotate and not by_name["nomem"].annotate
    assert "cart" in by_name and all(r.container in ("istio-proxy", "discovery") for r in report.rows)


def test_proxy_default_outliers_and_fixed_query_count(prometheus: PromServer) -> None:
    """Default = median requests / p90 limits of the 5 sidecars; web, cart, batch are outliers; 8 queries."""
    client = PrometheusClient(prometheus.url)
    report = gather(client, SCOPE, Policy())
    assert report.proxy_default == R(35, 650, 58, 520)
    assert {r.workload for r in report.rows if r.annotate} == {"web", "cart", "batch"}
    assert report.queries == client.queries == 8


def test_current_against_recommended(prometheus: PromServer) -> None:
    """kube-state-metrics' values are compared: web saves, cart and batch are at risk, ledger is unknown."""
    rows = {r.workload: r for r in gather(PrometheusClient(prometheus.url), SCOPE, Policy()).rows}
    web = rows["web"].verdict
    assert web is not None and (web.kind, web.cpu_saving_m, web.memory_saving_mi) == ("saving", 77, 82)
    cart = rows["cart"].verdict
    assert cart is not None and cart.kind == "risk" and "cpu p-usage 115m > request 100m" in cart.text
    batch = rows["batch"].verdict
    assert batch is not None and "memory peak 400Mi > limit 256Mi (OOM)" in batch.text
    ledger = rows["ledger"].verdict
    assert ledger is not None and ledger.kind == "unknown"
    assert rows["ledger"].effective == R(35, 650, 58, 520)  # not an outlier: it gets the default


def test_namespace_filter(prometheus: PromServer) -> None:
    """--namespace pay keeps the control plane and gateways, and only pay's sidecars."""
    scope = Scope(window_seconds=WINDOW, until=dataset.END, namespaces=("pay",))
    report = gather(PrometheusClient(prometheus.url), scope, Policy())
    assert {(r.namespace, r.workload) for r in report.rows} == {
        ("istio-system", "istiod"), ("istio-system", "istio-ingressgateway"), ("pay", "ledger"), ("pay", "batch")}
    assert report.proxy_default == R(29, 650, 52, 520)


def test_cli_yaml_output_feeds_install(prometheus: PromServer, tmp_path: Path) -> None:
    """`meshops tune -o yaml` writes the overlay and the annotations; `install --tuning` composes it."""
    proc = meshops("tune", "--prometheus", prometheus.url, "--window", "12h", "--until", str(dataset.END),
                   "-o", "yaml", "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    overlay, annotations = list(yaml.safe_load_all(proc.stdout))
    assert overlay["spec"]["components"]["pilot"]["k8s"]["resources"] == {
        "requests": {"cpu": "230m", "memory": "345Mi"}, "limits": {"cpu": "260m", "memory": "390Mi"}}
    assert overlay["spec"]["values"]["global"]["proxy"]["resources"]["limits"] == {"cpu": "650m", "memory": "520Mi"}
    cart = next(w for w in annotations["workloads"] if w["name"] == "cart")
    assert cart == {"namespace": "shop", "name": "cart", "annotations": {
        "sidecar.istio.io/proxyCPU": "132m", "sidecar.istio.io/proxyCPULimit": "155m",
        "sidecar.istio.io/proxyMemory": "204Mi", "sidecar.istio.io/proxyMemoryLimit": "237Mi"}}
    assert (tmp_path / "out" / "proxy-annotations.yaml").is_file()
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(proc.stdout)
    dry = meshops("install", "--profile", "production", "--tuning", str(tuning), "--version", "1.23.2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    spec = yaml.safe_load(dry.stdout)["spec"]
    assert spec["components"]["pilot"]["k8s"]["resources"]["requests"] == {"cpu": "230m", "memory": "345Mi"}
    assert spec["components"]["pilot"]["k8s"]["hpaSpec"]["minReplicas"] == 2  # production's, kept
    gw = next(g for g in spec["components"]["ingressGateways"] if g["name"] == "istio-ingressgateway")
    assert gw["enabled"] is True and gw["k8s"]["resources"]["requests"] == {"cpu": "345m", "memory": "92Mi"}


def test_cli_table(prometheus: PromServer) -> None:
    """The table shows current -> recommended with the saving or the risk, and 'not enough data'."""
    proc = meshops("tune", "--prometheus", prometheus.url, "--window", "12h", "--until", "2023-11-14T22:15:00Z")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "100m->23m" in lines["shop/web"] and "saves 77m CPU" in lines["shop/web"]
    assert "RISK: cpu p-usage 115m > request 100m" in lines["shop/cart"]
    assert "not enough data (no memory series)" in lines["shop/nomem"]
    assert "8 Prometheus queries" in proc.stdout


def test_window_without_data_is_a_clear_error(prometheus: PromServer) -> None:
    """A window ending before the data (here: now, years later) exits 1 with 'no data', no numbers."""
    proc = meshops("tune", "--prometheus", prometheus.url, "--window", "7d", "-o", "yaml")
    assert proc.returncode == 1
    assert "no data: Prometheus at" in proc.stderr and "in the window" in proc.stderr
    assert proc.stdout == ""


def test_prometheus_down_is_a_clear_error() -> None:
    """Nothing listening: exit 1, 'connection refused', and a hint."""
    proc = meshops("tune", "--prometheus", f"http://127.0.0.1:{free_port()}", "--window", "1h")
    assert proc.returncode == 1
    assert "connection refused" in proc.stderr and "is Prometheus running" in proc.stderr


def test_driver_errors_name_the_query(prometheus: PromServer) -> None:
    """A malformed query is BadQuery with Prometheus's reason; an absent metric is NoData unless allowed."""
    client = PrometheusClient(prometheus.url)
    with pytest.raises(BadQuery, match=r"rejected the query 'rate\(x\[5m\]': bad_data: .*parse error"):
        client.query("rate(x[5m]", at=dataset.END)
    with pytest.raises(NoData, match="no series for 'no_such_metric'"):
        client.query("no_such_metric", at=dataset.END)
    assert client.query("no_such_metric", at=dataset.END, allow_empty=True) == []
    with pytest.raises(DriverError, match="not a Prometheus URL"):
        PrometheusClient("localhost:9090")


def test_query_range_and_scalars(prometheus: PromServer) -> None:
    """query_range gives ascending points; a scalar comes back as one unlabelled sample."""
    client = PrometheusClient(prometheus.url)
    series = client.query_range('container_memory_working_set_bytes{pod="web-5c6d7f8b9-xq2zr",container="istio-proxy"}',
                                start=dataset.END - 3600, end=dataset.END, step=300)
    assert len(series) == 1 and len(series[0].points) == 13
    assert [v for _, v in series[0].points] == [40.0 * MIB] * 13
    assert [s.value for s in client.query("1 + 1", at=dataset.END)] == [2.0]
