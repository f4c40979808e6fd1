"""In-place upgrades, overlays, dry runs and version-specific wording of the istioctl programs."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from meshops.sandbox.istio.harness import MeshHarness

START, NEXT = "1.24.1", "1.25.0"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MeshHarness(tmp_path_factory.mktemp("inplace"), ["blue"],
                     {"istio": START, "istio_versions": [NEXT, "1.22.4", "1.23.3", "1.30.0"], "route53": False}) as m:
        c = m.cluster("blue")
        c.api.create(("", "namespaces"), {"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}})
        c.api.create(("apps", "deployments"), {
            "metadata": {"name": "cart"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cart"}},
                     "template": {"metadata": {"labels": {"app": "cart"}},
                                  "spec": {"containers": [{"name": "cart", "image": "nginx"}]}}}}, namespace="shop")
        c.wait_idle()
        yield m


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def data_plane(mesh, version):
    return next(line for line in ok(mesh.istioctl(version, "version")).splitlines()
                if line.startswith("data plane version:"))


def test_dry_run_and_overlay_change_nothing(mesh, tmp_path):
    overlay = tmp_path / "iop.yaml"
    overlay.write_text(yaml.safe_dump({"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
                                       "spec": {"profile": "demo", "revision": "preview"}}))
    out = ok(mesh.istioctl(NEXT, "install", "-f", str(overlay), "--dry-run"))
    assert "✔ Egress gateways installed 🛫" in out  # the demo profile from the overlay
    store = mesh.cluster("blue").store
    assert store.get(("apps", "deployments"), "istio-system", "istiod-preview") is None
    manifest = list(yaml.safe_load_all(ok(mesh.istioctl(NEXT, "manifest", "generate", "-f", str(overlay),
                                                          "--set", "components.pilot.k8s.replicaCount=2"))))
    istiod = next(d for d in manifest if d["kind"] == "Deployment" and d["metadata"]["name"] == "istiod-preview")
    assert istiod["spec"]["replicas"] == 2
    assert istiod["spec"]["template"]["spec"]["containers"][0]["image"] == f"docker.io/istio/pilot:{NEXT}"
    assert {d["metadata"]["name"] for d in manifest if d["kind"] == "Deployment"} == {
        "istiod-preview", "istio-ingressgateway", "istio-egressgateway"}


def test_prompt_and_icons_by_version(mesh):
    old = mesh.istioctl("1.23.3", "install", "--revision", "x", stdin="n\n")
    assert old.stdout.startswith('This will install the Istio 1.23.3 "default" profile (with components: '
                                 '"Istio core" "Istiod" "Ingress gateways") into the cluster. Proceed? (y/N)')
    new = mesh.istioctl(NEXT, "install", "--revision", "x", stdin="n\n")
    assert new.stdout.startswith(f'This will install the Istio {NEXT} profile "default" into the cluster. Proceed? (y/N)')
    plain = ok(mesh.istioctl("1.22.4", "install", "--revision", "y", "--dry-run"))
    assert plain.splitlines()[0] == "✔ Istio core installed"  # no icons before 1.23


def test_precheck_refuses_too_old_kubernetes(mesh):
    result = mesh.istioctl("1.30.0", "x", "precheck")
    assert result.returncode == 1
    assert result.stdout.startswith('Error [IST0142] (Cluster) The Kubernetes Version "v1.30.4" is lower than the '
                                    "minimum version: 1.32")
    assert "Issues found when checking the cluster. Istio may not be safe to install or upgrade." in result.stderr


def test_in_place_upgrade(mesh):
    assert data_plane(mesh, START) == f"data plane version: {START} (3 proxies)"
    out = ok(mesh.istioctl(NEXT, "upgrade", "-y"))
    assert out.splitlines()[-2:] == ["✔ Installation complete",
                                     "Made this installation the default for injection and validation."]
    lines = ok(mesh.istioctl(NEXT, "version")).splitlines()
    assert lines[1] == f"control plane version: {NEXT}"
    # The gateway was upgraded with the control plane; sidecars keep their version until restarted.
    assert lines[2] == f"data plane version: {START} (2 proxies), {NEXT} (1 proxies)"
    issues = json.loads(ok(mesh.istioctl(NEXT, "analyze", "-n", "shop", "-o", "json")))
    assert [(i["code"], i["origin"]) for i in issues] == [("IST0158", "Namespace shop")]
    c = mesh.cluster("blue")
    c.api.patch(("apps", "deployments"), "shop", "cart",
                {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "x"}}}}},
                "application/strategic-merge-patch+json")
    deadline = time.monotonic() + 10
    while data_plane(mesh, NEXT) != f"data plane version: {NEXT} (3 proxies)" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert data_plane(mesh, NEXT) == f"data plane version: {NEXT} (3 proxies)"
    assert ok(mesh.istioctl(NEXT, "analyze", "-n", "shop", "-o", "json")).strip() == "[]"
