"""The `revisioned` scenario: a revisioned install whose namespaces inject through the prod-stable tag."""

from __future__ import annotations

import json

import pytest

from meshops.sandbox.istio.harness import MeshHarness


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MeshHarness(tmp_path_factory.mktemp("revisioned"), ["blue"], {"scenario": "revisioned", "route53": False}) as m:
        yield m


def test_tag_points_at_the_revision(mesh):
    listed = json.loads(mesh.istioctl(None, "tag", "list", "-o", "json").stdout)
    tags = {t["tag"]: t for t in listed}
    assert tags["prod-stable"]["revision"] == "1-24-1"
    assert sorted(tags["prod-stable"]["namespaces"]) == ["bookinfo-backend", "bookinfo-data", "bookinfo-frontend",
                                                         "bookinfo-ops"]
    assert tags["default"]["revision"] == "1-24-1"


def test_workloads_injected_by_the_revision_not_the_tag(mesh):
    pods, _ = mesh.cluster("blue").store.list(("", "pods"))
    by_ns: dict[str, set[str]] = {}
    for p in pods:
        status = p["metadata"].get("annotations", {}).get("sidecar.istio.io/status")
        by_ns.setdefault(p["metadata"]["namespace"], set()).add(json.loads(status)["revision"] if status else "-")
    for ns in ("bookinfo-frontend", "bookinfo-data", "bookinfo-ops"):
        assert by_ns[ns] == {"1-24-1"}
    assert by_ns["bookinfo-backend"] == {"1-24-1", "-"}  # ratings-migrator opts out
    assert by_ns["legacy-batch"] == {"-"}
    completed = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    assert [p["metadata"]["namespace"] for p in completed] == ["bookinfo-data"]  # the finished Job's pod


def test_ingress_serves_the_app(mesh):
    import urllib.request

    with urllib.request.urlopen(mesh.sandbox.env["MESHOPS_SANDBOX_INGRESS_BLUE"] + "/productpage", timeout=5) as r:
        assert r.status == 200
