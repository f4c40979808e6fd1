"""A canary upgrade of a mesh meshops did not install (sandbox scenario ``istioctl-plain``: plain
istioctl, no meshops record, no installed-state), checked from outside meshops with kubectl.

One sandbox, a cluster per case:
- ``plain``: 1-24-1 -> 1.25.2 exits 0; every non-default setting of the scenario is identical on
  the new revision; both gateway kinds Ready, connected to 1-25-2, the LB Service the same object.
- ``unrec``: an istiod env var from a Secret cannot be recovered: refused before any write, named.
- ``parity``: a stale meshops record would drop outboundTrafficPolicy: --dry-run exits 2; the run
  stops at the parity gate before any namespace moves and rolls back (exit 1).
- ``skip``: gateways left on the old revision keep it installed; ``finalize --force`` refuses to
  uninstall it (the LB Service would go with it); an EKS-ARN context matching prod* is refused
  for in-place.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.canary_sandbox import Sandbox, mesh_state

pytestmark = pytest.mark.slow

OLD, NEW, TO = "1-24-1", "1-25-2", "1.25.2"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("plain"), scenario="istioctl-plain", clusters=["plain", "unrec", "parity", "skip"])
    yield sb
    sb.stop()


def kubectl(sb: Sandbox, cluster: str, *args: str) -> Any:
    """kubectl itself (not meshops' client): what an operator would see."""
    out = subprocess.run(["kubectl", "--context", cluster, *args, "-o", "json"], env=sb.env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def settings(sb: Sandbox, cluster: str, rev: str) -> dict[str, Any]:
    """The scenario's non-default settings as revision ``rev`` runs them."""
    ns = ["-n", "istio-system"]
    mesh = yaml.safe_load(kubectl(sb, cluster, "get", "configmap", f"istio-{rev}", *ns)["data"]["mesh"])
    values = json.loads(kubectl(sb, cluster, "get", "configmap", f"istio-sidecar-injector-{rev}", *ns)["data"]["values"])
    dep = kubectl(sb, cluster, "get", "deployment", f"istiod-{rev}", *ns)
    hpa = kubectl(sb, cluster, "get", "horizontalpodautoscaler.v2.autoscaling", f"istiod-{rev}", *ns)
    discovery = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "discovery")
    env = {e["name"]: e.get("value") for e in discovery.get("env") or []}
    return {
        "outboundTrafficPolicy": mesh.get("outboundTrafficPolicy"),
        "accessLogFile": mesh.get("accessLogFile"),
        "holdApplicationUntilProxyStarts": (mesh.get("defaultConfig") or {}).get("holdApplicationUntilProxyStarts"),
        "variant": values["global"].get("variant"),
        "proxy.resources": values["global"]["proxy"].get("resources"),
        "istiod.resources": discovery.get("resources"),
        "istiod.image.variant": discovery["image"].endswith("-distroless"),
        "PILOT_HTTP10": env.get("PILOT_HTTP10"),
        "hpa": (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]),
    }


def _gateway_pods(sb: Sandbox, cluster: str, ns: str, selector: str) -> list[dict[str, Any]]:
    pods = kubectl(sb, cluster, "get", "pods", "-n", ns, "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ca_addr(pod: dict[str, Any]) -> str:
    for c in [*pod["spec"].get("containers", []), *pod["spec"].get("initContainers", [])]:
        if c["name"] == "istio-proxy":
            return next((e.get("value", "") for e in c.get("env") or [] if e["name"] == "CA_ADDR"), "")
    return ""


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_istioctl_plain_upgrade_keeps_every_setting_and_moves_both_gateways(sandbox: Sandbox) -> None:
    before = settings(sandbox, "plain", OLD)
    assert before["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"} and before["PILOT_HTTP10"] == "true"
    lb = kubectl(sandbox, "plain", "get", "service", "istio-ingressgateway", "-n", "istio-system")
    helm_svc = kubectl(sandbox, "plain", "get", "service", "istio-ingress", "-n", "istio-ingress")
    # The one pod meshops cannot restart (a naked pod) would keep the old revision: without it the
    # run finalizes, so the gateways must work after `istioctl uninstall --revision 1-24-1`.
    sandbox.kube("plain").delete("v1", "Pod", "debug-shell", "bookinfo-backend")
    dry = sandbox.meshops("plain", "upgrade", "--to", TO, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "recovered from the running control plane" in dry.stdout + dry.stderr
    assert "mode: REGISTRY_ONLY" in dry.stdout and "PILOT_HTTP10" in dry.stdout  # the overlay, shown
    out = sandbox.meshops("plain", "upgrade", "--to", TO, "--wave-size", "5")
    assert out.returncode == 0, out.stderr[-3000:]
    assert settings(sandbox, "plain", NEW) == before
    state = mesh_state(sandbox.kube("plain"))
    assert state["revisions"] == {NEW: TO} and state["dangling"] == []  # finalized: the old revision is gone
    # Both gateway kinds: Ready, talking to the new istiod, behind the very same Service objects.
    for ns, selector, svc in (("istio-system", "app=istio-ingressgateway", lb), ("istio-ingress", "app=istio-ingress",
                                                                                 helm_svc)):
        pods = _gateway_pods(sandbox, "plain", ns, selector)
        assert pods and all(_ready(p) for p in pods), [p["metadata"]["name"] for p in pods]
        assert {_ca_addr(p) for p in pods} == {f"istiod-{NEW}.istio-system.svc:15012"}
        after = kubectl(sandbox, "plain", "get", "service", svc["metadata"]["name"], "-n", ns)
        assert after["metadata"]["uid"] == svc["metadata"]["uid"]
    run = out.stdout.strip().splitlines()[-1]
    connected = sandbox.outputs("plain", run)["gateways"]["connected"]
    assert connected and all(v.startswith(f"istiod-{NEW}-") for v in connected.values())


def test_unrecoverable_setting_refused_before_any_write(sandbox: Sandbox) -> None:
    kube = sandbox.kube("unrec")

    def patches_of_istiod() -> int:
        return sum(1 for r in sandbox.audit("unrec")
                   if r["verb"] == "patch" and r["path"].endswith(f"/deployments/istiod-{OLD}"))

    # istioctl's server-side apply of the install is a patch of the same Deployment: count, so the
    # wait below is for this test's own patch, not for that one.
    before = patches_of_istiod()
    kube.patch("apps/v1", "Deployment", f"istiod-{OLD}", {"spec": {"template": {"spec": {"containers": [
        {"name": "discovery", "env": [{"name": "LICENSE_KEY", "valueFrom": {"secretKeyRef": {
            "name": "istiod-extra", "key": "license"}}}]}]}}}}, "istio-system", patch_type="strategic")
    # The audit log is written behind the response: wait for our own patch to show up in it, so
    # the mark below starts after it and only meshops' writes can follow.
    deadline = time.monotonic() + 10
    while patches_of_istiod() <= before:
        assert time.monotonic() < deadline, "the test's own patch never reached the audit log"
        time.sleep(0.05)
    mark = len(sandbox.audit("unrec"))
    out = sandbox.meshops("unrec", "upgrade", "--to", TO)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "values.pilot.env.LICENSE_KEY" in out.stderr and "--accept-defaults" in out.stderr
    assert sandbox.writes_since("unrec", mark) == []
    # Accepting the target's default for it lets the plan through (dry run: still nothing written).
    ok = sandbox.meshops("unrec", "upgrade", "--to", TO, "--dry-run", "--accept-defaults", "values.pilot.env.LICENSE_KEY")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert sandbox.writes_since("unrec", mark) == []


def test_parity_gate_stops_a_silent_outbound_policy_change(sandbox: Sandbox) -> None:
    """A stale meshops record (written before someone set REGISTRY_ONLY by hand) would install the new
    revision with ALLOW_ANY: refused in --dry-run; stopped by the gate before the first relabel."""
    kube = sandbox.kube("parity")
    stale = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
             "spec": {"meshConfig": {"accessLogFile": "/dev/stdout",
                                     "defaultConfig": {"holdApplicationUntilProxyStarts": True}}}}
    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "meshops-install-overlay", "namespace": "istio-system",
                              "annotations": {"meshops.dev/install-revision": OLD, "meshops.dev/install-version": "1.24.1"}},
                 "data": {"overlay.yaml": yaml.safe_dump(stale)}})
    before = mesh_state(kube)
    dry = sandbox.meshops("parity", "upgrade", "--to", TO, "--dry-run")
    assert dry.returncode == 2, dry.stderr[-2000:]
    assert "meshConfig.outboundTrafficPolicy.mode" in dry.stderr
    out = sandbox.meshops("parity", "upgrade", "--to", TO)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "parity gate" in out.stderr and "mesh.outboundTrafficPolicy.mode" in out.stderr
    run = sandbox.run_id("parity")
    keys = [s["key"] for s in sandbox.run_state("parity", run)["steps"]]
    assert not [k for k in keys if k.startswith("waves")]  # no namespace moved
    after = mesh_state(kube)
    assert after["namespaces"] == before["namespaces"] and after["workloads"] == before["workloads"]
    assert after["revisions"] == before["revisions"]  # the new revision was uninstalled by the rollback


def test_finalize_keeps_a_revision_that_still_owns_a_load_balancer(sandbox: Sandbox, tmp_path: Path) -> None:
    kube = sandbox.kube("skip")
    lb_uid = kube.get("v1", "Service", "istio-ingressgateway", "istio-system")["metadata"]["uid"]
    out = sandbox.meshops("skip", "upgrade", "--to", TO, "--gateways", "skip", "--wave-size", "5")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"revision {OLD} stays installed" in out.stdout and "istio-ingressgateway" in out.stdout
    # Even --force (which detaches leftover pods) never lets uninstall take the load balancer.
    fin = sandbox.meshops("skip", "upgrade", "finalize", out.stdout.strip().splitlines()[-1], "--force")
    assert fin.returncode == 1, fin.stderr[-2000:]
    assert "would delete gateway objects" in fin.stderr and "Service/istio-system/istio-ingressgateway" in fin.stderr
    assert kube.get("v1", "Service", "istio-ingressgateway", "istio-system")["metadata"]["uid"] == lb_uid
    assert OLD in mesh_state(kube)["revisions"]
    # The guard knows an EKS cluster by the name inside its ARN, not only by the context name.
    arn = "arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu"
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    for ctx in config["contexts"]:
        if ctx["name"] == "skip":
            config["contexts"].append({**ctx, "name": arn})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    env = {**sandbox.env, "KUBECONFIG": str(kubeconfig)}
    argv = [*sandbox.argv("skip", "upgrade", "--strategy", "inplace", "--to", TO)]
    argv[argv.index("--context") + 1] = arn
    refused = subprocess.run(argv, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "prod* (prod-eu)" in refused.stderr
