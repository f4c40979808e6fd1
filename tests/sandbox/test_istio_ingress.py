"""Ingress probes are real HTTP requests whose answers follow the cluster and the faults."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from meshops.sandbox import faults
from meshops.sandbox.istio.harness import MeshHarness


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MeshHarness(tmp_path_factory.mktemp("ingress"), ["blue", "green"],
                     {"scenario": "blue-green", "istio_versions": ["1.25.0"], "fault_seed": 11}) as m:
        yield m


def probe(mesh, cluster, path="/productpage"):
    url = mesh.sandbox.env[f"MESHOPS_SANDBOX_INGRESS_{cluster.upper()}"] + path
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def until(fn, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"still {got!r}, wanted {expected!r}")


def scale(mesh, cluster, namespace, name, replicas):
    mesh.cluster(cluster).api.patch(("apps", "deployments"), namespace, name, {"spec": {"replicas": replicas}},
                                    "application/merge-patch+json")


def test_healthy_clusters_answer_200_and_name_themselves(mesh):
    for name in ("blue", "green"):
        status, headers, body = probe(mesh, name)
        assert status == 200
        assert headers["x-meshops-cluster"] == name
        assert headers["Server"] == "istio-envoy"
        assert "productpage.bookinfo-frontend" in body
        assert probe(mesh, name, "/healthz/ready")[0] == 200
        assert probe(mesh, name, "/no-such-route")[0] == 404


def test_ingress_fault_all_and_share(mesh):
    url = mesh.sandbox.env["MESHOPS_SANDBOX_FAULTS_URL"]
    faults.send(url, "green", ["ingress-503"])
    try:
        status, headers, body = probe(mesh, "green")
        assert (status, body) == (503, "fault filter abort")
        assert headers["x-meshops-fault"] == "ingress-503"
        assert probe(mesh, "blue")[0] == 200
    finally:
        faults.clear(url, "green")
    assert probe(mesh, "green")[0] == 200
    faults.send(url, "blue", ["ingress-503:share=0.5"])
    try:
        codes = [probe(mesh, "blue")[0] for _ in range(200)]
        assert set(codes) == {200, 503}
        assert 60 < codes.count(503) < 140
    finally:
        faults.clear(url, "blue")


def test_probe_follows_app_and_gateway_readiness(mesh):
    scale(mesh, "blue", "bookinfo-frontend", "productpage-v1", 0)
    until(lambda: probe(mesh, "blue")[:1], (503,))
    assert probe(mesh, "blue")[2].startswith("no healthy upstream")
    scale(mesh, "blue", "bookinfo-frontend", "productpage-v1", 2)
    until(lambda: probe(mesh, "blue")[0], 200)
    scale(mesh, "blue", "istio-system", "istio-ingressgateway", 0)
    until(lambda: probe(mesh, "blue", "/healthz/ready")[0], 503)
    assert probe(mesh, "blue")[0] == 503
    scale(mesh, "blue", "istio-system", "istio-ingressgateway", 1)
    until(lambda: probe(mesh, "blue")[0], 200)


def test_nodes_not_ready_take_the_cluster_down(mesh):
    url = mesh.sandbox.env["MESHOPS_SANDBOX_FAULTS_URL"]
    nodes, _ = mesh.cluster("green").store.list(("", "nodes"))
    faults.send(url, "green", [f"node-not-ready:node={n['metadata']['name']}" for n in nodes])
    try:
        until(lambda: probe(mesh, "green")[0], 503)
        node = mesh.cluster("green").store.get(("", "nodes"), "", nodes[0]["metadata"]["name"])
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "Unknown"
    finally:
        faults.clear(url, "green")
    until(lambda: probe(mesh, "green")[0], 200)


def test_canary_revision_whose_proxies_never_get_ready(mesh):
    """A stuck canary holds the rollout; the old pods keep serving until the fault clears."""
    r = mesh.istioctl("1.25.0", "install", "-y", "--revision", "1-25-0", "--set", "profile=minimal",
                      "--context", "blue")
    assert r.returncode == 0, r.stderr
    url = mesh.sandbox.env["MESHOPS_SANDBOX_FAULTS_URL"]
    faults.send(url, "blue", ["proxy-not-ready:revision=1-25-0"])
    c = mesh.cluster("blue")
    c.api.patch(("", "namespaces"), None, "bookinfo-frontend",
                {"metadata": {"labels": {"istio-injection": None, "istio.io/rev": "1-25-0"}}},
                "application/merge-patch+json")
    c.api.patch(("apps", "deployments"), "bookinfo-frontend", "productpage-v1",
                {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}},
                "application/strategic-merge-patch+json")

    def new_pods(ready):
        pods, _ = c.store.list(("", "pods"), "bookinfo-frontend")
        return [p for p in pods if p["metadata"]["annotations"].get("istio.io/rev") == "1-25-0"
                and p["status"].get("phase") == "Running"
                and any(x["type"] == "Ready" and (x["status"] == "True") == ready for x in p["status"]["conditions"])]

    until(lambda: len(new_pods(ready=False)) >= 1, True)
    time.sleep(0.3)
    assert new_pods(ready=True) == []
    assert probe(mesh, "blue")[0] == 200  # maxUnavailable keeps the old pods serving
    faults.clear(url, "blue")
    until(lambda: len(new_pods(ready=True)), 2)
    until(lambda: probe(mesh, "blue")[0], 200)
    ps = mesh.istioctl("1.25.0", "proxy-status", "--context", "blue")
    rows = [line for line in ps.stdout.splitlines() if ".bookinfo-frontend" in line]
    assert len(rows) == 2 and all(row.rstrip().endswith("1.25.0") for row in rows)
