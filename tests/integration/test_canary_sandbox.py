"""Canary upgrades end to end against the sandbox over HTTP: `meshops upgrade` as a user runs it.

One sandbox (default scenario: unrevisioned Istio 1.24.1, bookinfo) with a cluster per case,
and one with the revisioned scenario (namespaces on the prod-stable tag).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshops.ops.istio_common import collect
from tests.support.canary_sandbox import Sandbox, istio_config, mesh_state

pytestmark = pytest.mark.slow

CLUSTERS = ["full", "broken", "flaky", "approve", "inplace", "soak"]
# What the default scenario has that needs a human (tests/../sandbox/scenarios/bookinfo.yaml).
DEFAULT_BLOCKERS = {
    ("naked_pod", "bookinfo-backend/debug-shell", True),
    ("opted_out", "bookinfo-backend/ratings-migrator", False),
    ("terminal_pod", "bookinfo-data/ratings-seed", False),
}
MOVED = {"DaemonSet/bookinfo-ops/log-shipper", "Deployment/bookinfo-backend/details-v1",
         "Deployment/bookinfo-backend/reviews-v1", "Deployment/bookinfo-backend/reviews-v2",
         "Deployment/bookinfo-backend/reviews-v3", "Deployment/bookinfo-data/ratings-v1",
         "Deployment/bookinfo-frontend/productpage-v1", "StatefulSet/bookinfo-data/ratings-db"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("canary"), scenario="default", clusters=CLUSTERS)
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def revisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("revisioned"), scenario="revisioned", clusters=["rev"])
    yield sb
    sb.stop()


def _blockers(outputs: dict[str, dict]) -> set[tuple[str, str, bool]]:
    # Pod names carry a generated suffix; compare owners by their stable prefix.
    out = set()
    for b in outputs["check"]["blockers"]:
        ref = b["ref"]
        if b["kind"] in ("opted_out", "terminal_pod"):
            ref = ref.rsplit("-", 2 if b["kind"] == "opted_out" else 1)[0]
        out.add((b["kind"], ref, b["holds_old"]))
    return out


def test_full_upgrade_from_unrevisioned(sandbox: Sandbox) -> None:
    """Unrevisioned 1.24.1 -> 1-25-2: every workload moved, blockers reported, config untouched, finalize."""
    kube = sandbox.kube("full")
    config_before = istio_config(kube)
    probe = f"{sandbox.env['MESHOPS_SANDBOX_INGRESS_FULL']}/productpage"
    out = sandbox.meshops("full", "upgrade", "--to", "1.25.2", "--first", "bookinfo-frontend", "--wave-size", "2",
                          "--order", "name",
                          "--probe", probe)
    assert out.returncode == 0, out.stderr[-3000:]
    run = out.stdout.strip().splitlines()[-1]
    outputs = sandbox.outputs("full", run)
    assert _blockers(outputs) == DEFAULT_BLOCKERS
    assert "bookinfo-backend/debug-shell" in out.stdout  # the one pod that holds the old revision, named
    moved = {w for k, o in outputs.items() if k.startswith("waves[") for w in o["restarted"]}
    assert moved == MOVED
    assert [o["namespaces"] for k, o in sorted(outputs.items()) if k.startswith("waves[")] == [
        ["bookinfo-frontend"], ["bookinfo-backend", "bookinfo-data"], ["bookinfo-ops"]]
    state = mesh_state(kube)
    assert state["revisions"] == {"default": "1.24.1", "1-25-2": "1.25.2"}  # kept: debug-shell still uses it
    assert state["default"] == "1-25-2" and state["validator"] == "1-25-2"
    assert {w: r for w, r in state["workloads"].items() if r != ["1-25-2"]} == {"Pod/bookinfo-backend/debug-shell": ["default"]}
    assert state["namespaces"]["bookinfo-frontend"] == {"istio-injection": "enabled"}  # --first labels put back
    assert istio_config(kube) == config_before

    kube.delete("v1", "Pod", "debug-shell", "bookinfo-backend")
    fin = sandbox.meshops("full", "upgrade", "finalize", run)
    assert fin.returncode == 0, fin.stderr[-3000:]
    state = mesh_state(kube)
    assert state["revisions"] == {"1-25-2": "1.25.2"}
    assert state["dangling"] == []
    assert all(r == ["1-25-2"] for r in state["workloads"].values())
    gateway = state["istio_system"]["Deployment/istio-ingressgateway"]
    assert gateway["images"] == ["docker.io/istio/proxyv2:1.25.2"]
    assert "Service/istio-ingressgateway" in state["istio_system"]  # not deleted with the old revision
    assert istio_config(kube) == config_before


def test_full_upgrade_from_revisioned(revisioned: Sandbox) -> None:
    """Revisioned 1-24-1 on prod-stable -> 1-26-0 by tags; --force finalize detaches the naked pod."""
    kube = revisioned.kube("rev")
    config_before = istio_config(kube)
    out = revisioned.meshops("rev", "upgrade", "--to", "1.26.0", "--first", "bookinfo-data", "--concurrency", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    run = out.stdout.strip().splitlines()[-1]
    state = mesh_state(kube)
    assert state["tags"] == {"default": "1-26-0", "prod-canary": "1-26-0", "prod-stable": "1-26-0"}
    assert {ns: labels for ns, labels in state["namespaces"].items() if ns.startswith("bookinfo")} == {
        ns: {"istio.io/rev": "prod-stable"} for ns in ("bookinfo-backend", "bookinfo-data", "bookinfo-frontend",
                                                        "bookinfo-ops")}
    fin = revisioned.meshops("rev", "upgrade", "finalize", run, "--force")
    assert fin.returncode == 0, fin.stderr[-3000:]
    assert "detached" in fin.stdout and "debug-shell" in fin.stdout
    state = mesh_state(kube)
    assert state["revisions"] == {"1-26-0": "1.26.0"} and state["dangling"] == []
    assert istio_config(kube) == config_before


def test_broken_new_revision_rolls_back(sandbox: Sandbox) -> None:
    """Proxies of the new revision never get ready: the wave fails and the mesh is left as it was."""
    kube = sandbox.kube("broken")
    before = mesh_state(kube)
    config_before = istio_config(kube)
    sandbox.fault("broken", "proxy-not-ready:revision=1-25-2")
    try:
        out = sandbox.meshops("broken", "upgrade", "--to", "1.25.2", "--wave-timeout", "4s")
    finally:
        sandbox.clear_faults()
    assert out.returncode == 1, out.stderr[-3000:]
    assert "rolled back" in out.stderr
    assert mesh_state(kube) == before
    assert istio_config(kube) == config_before


def test_api_errors_and_429s_still_complete(sandbox: Sandbox) -> None:
    """2% of requests answer 429 with Retry-After (and a few 500): the upgrade still completes."""
    kube = sandbox.kube("flaky")
    mark = len(sandbox.audit("flaky"))
    # ...and a third of the journal's ConfigMap updates get a 429, so Retry-After is surely exercised.
    sandbox.fault("flaky", "api-error:code=429,rate=0.02,retry-after=1", "api-error:code=500,rate=0.0025",
                  "api-error:code=429,rate=0.3,retry-after=1,resource=configmaps,verbs=update")
    try:
        out = sandbox.meshops("flaky", "upgrade", "--to", "1.25.2")
    finally:
        sandbox.clear_faults()
    assert out.returncode == 0, out.stderr[-3000:]
    codes = [r["status"] for r in sandbox.audit("flaky")[mark:]]
    assert codes.count(429) >= 2
    state = mesh_state(kube)
    assert all(r == ["1-25-2"] for w, r in state["workloads"].items() if w != "Pod/bookinfo-backend/debug-shell")


def test_approve_each_wave(sandbox: Sandbox, tmp_path: Path) -> None:
    """--approve-each-wave pauses (exit 130) after a wave until `meshops approve RUN waves[i]`."""
    out = sandbox.meshops("approve", "upgrade", "--to", "1.25.2", "--wave-size", "4", "--approve-each-wave")
    assert out.returncode == 130, out.stderr[-3000:]
    run = sandbox.run_id("approve")
    assert "meshops approve" in out.stderr and "waves[0]" in out.stderr
    ok = sandbox.meshops("approve", "approve", run, "waves[0]")
    assert ok.returncode == 0, ok.stderr
    resumed = sandbox.meshops("approve", "resume", run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads(sandbox.meshops("approve", "runs", "show", run, "-o", "json").stdout)
    assert state["status"] == "succeeded" and "waves[0]" in state["approvals"]


def test_inplace_upgrade_and_rollback(sandbox: Sandbox) -> None:
    """--strategy inplace: istiod, gateway and proxies at 1.25.2; `meshops rollback` brings all back to 1.24.1."""
    kube = sandbox.kube("inplace")
    before = mesh_state(kube)
    out = sandbox.meshops("inplace", "upgrade", "--strategy", "inplace", "--to", "1.25.2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bookinfo-backend/debug-shell" in out.stdout  # the naked pod keeps its 1.24.1 proxy, named
    run = out.stdout.strip().splitlines()[-1]
    snap = collect(kube)
    assert snap.revisions["default"].version == "1.25.2"
    assert snap.proxies_by_version() == {"1.24.1": 1, "1.25.2": 13}
    back = sandbox.meshops("inplace", "rollback", run)
    assert back.returncode == 0, back.stderr[-3000:]
    snap = collect(kube)
    assert snap.revisions["default"].version == "1.24.1"
    assert snap.proxies_by_version() == {"1.24.1": 14}
    after = mesh_state(kube)
    assert after["namespaces"] == before["namespaces"] and after["workloads"] == before["workloads"]


def test_canary_gateway_and_soak_then_finalize(sandbox: Sandbox) -> None:
    """--gateways canary bridges the istioctl gateway's move with istio-ingressgateway-canary on the new
    revision, then istioctl moves the original and the canary goes; --soak keeps the old revision until
    `upgrade finalize` (refused before the soak ends unless --force)."""
    kube = sandbox.kube("soak")
    kube.delete("v1", "Pod", "debug-shell", "bookinfo-backend")
    out = sandbox.meshops("soak", "upgrade", "--to", "1.25.2", "--gateways", "canary", "--soak", "1h")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "soaking" in out.stdout
    run = out.stdout.strip().splitlines()[-1]
    state = mesh_state(kube)
    assert state["istio_system"]["Deployment/istio-ingressgateway"]["images"] == ["docker.io/istio/proxyv2:1.25.2"]
    assert "Deployment/istio-ingressgateway-canary" not in state["istio_system"]
    assert sandbox.outputs("soak", run)["gateways"]["connected"]
    assert state["revisions"] == {"default": "1.24.1", "1-25-2": "1.25.2"}
    early = sandbox.meshops("soak", "upgrade", "finalize", run)
    assert early.returncode == 2 and "soaks for another" in early.stderr
    forced = sandbox.meshops("soak", "upgrade", "finalize", run, "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    state = mesh_state(kube)
    assert state["revisions"] == {"1-25-2": "1.25.2"} and state["dangling"] == []
    assert "Service/istio-ingressgateway" in state["istio_system"]
    assert state["workloads"]["Deployment/istio-system/istio-ingressgateway"] == ["1-25-2"]
