"""Negative controls: the sandbox now fails meshops' old shortcuts, as a real cluster would.

Each test states a fact of ../shared/reference/istio-reality.md that the sandbox used to get
wrong in meshops' favour (installed-state written, PROXY_CONFIG on the istioctl gateway, a
gateway that survives `uninstall --revision`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from meshops.sandbox.istio.harness import MeshHarness

OLD, NEW = "1.24.1", "1.25.0"
R_OLD, R_NEW = "1-24-1", "1-25-0"
DEPLOYMENTS = ("apps", "deployments")
SERVICES = ("", "services")
PODS = ("", "pods")


@pytest.fixture
def mesh(tmp_path):
    """OLD installed by plain istioctl as revision 1-24-1 with its ingress gateway; no meshops record."""
    with MeshHarness(tmp_path, ["blue"], {"istio": OLD, "istio_versions": [NEW], "revision": R_OLD,
                                          "route53": False}) as m:
        yield m


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def gateway_pods(mesh: MeshHarness) -> list[dict[str, Any]]:
    pods, _ = mesh.cluster("blue").store.list(PODS, "istio-system",
                                              lambda p: p["metadata"]["labels"].get("app") == "istio-ingressgateway")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_plain_install_leaves_no_installed_state(mesh):
    c = mesh.cluster("blue")
    # No IstioOperator CRD, hence no installed-state (reference §1, PR #47860).
    assert c.store.get(("apiextensions.k8s.io", "customresourcedefinitions"), "", "istiooperators.install.istio.io") is None
    labels = c.store.get(DEPLOYMENTS, "istio-system", f"istiod-{R_OLD}")["metadata"]["labels"]
    assert labels["install.operator.istio.io/owning-resource"] == "unknown"  # 1.24+: no IOP name given
    assert labels["operator.istio.io/managed"] == "Reconcile"
    assert labels["operator.istio.io/version"] == OLD
    # A leftover installed-state from an old istioctl is deleted by the next install (PR #47943).
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "istiooperators.install.istio.io"},
           "spec": {"group": "install.istio.io", "scope": "Namespaced",
                    "names": {"kind": "IstioOperator", "plural": "istiooperators", "singular": "istiooperator",
                              "listKind": "IstioOperatorList"},
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    c.api.create(("apiextensions.k8s.io", "customresourcedefinitions"), crd)
    iops = ("install.istio.io", "istiooperators")
    c.api.create(iops, {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
                        "metadata": {"name": f"installed-state-{R_NEW}"}, "spec": {"profile": "minimal"}},
                 namespace="istio-system")
    ok(mesh.istioctl(NEW, "install", "-y", "--revision", R_NEW, "--set", "profile=minimal"))
    assert c.store.get(iops, "istio-system", f"installed-state-{R_NEW}") is None


def test_gateway_retargeted_by_label_and_env_goes_not_ready(mesh):
    """meshops' old retarget (labels, image and a PROXY_CONFIG env) does not move an istioctl
    gateway: CA_ADDR and config-volume still name the old revision (reference §2)."""
    c = mesh.cluster("blue")
    ok(mesh.istioctl(NEW, "install", "-y", "--revision", R_NEW, "--set", "profile=minimal"))
    dep = c.store.get(DEPLOYMENTS, "istio-system", "istio-ingressgateway")
    proxy = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert "PROXY_CONFIG" not in env and env["CA_ADDR"] == f"istiod-{R_OLD}.istio-system.svc:15012"
    patched = {**dep}
    patched["metadata"] = {**dep["metadata"], "labels": {**dep["metadata"]["labels"], "istio.io/rev": R_NEW}}
    tmpl = patched["spec"]["template"]
    tmpl["metadata"]["labels"] = {**tmpl["metadata"]["labels"], "istio.io/rev": R_NEW}
    tmpl["spec"]["containers"] = [{**proxy, "image": f"docker.io/istio/proxyv2:{NEW}",
                                   "env": [*proxy["env"], {"name": "PROXY_CONFIG", "value":
                                           '{"discoveryAddress":"istiod-1-25-0.istio-system.svc:15012"}'}]}]
    c.api.update(DEPLOYMENTS, patched, namespace="istio-system")
    wait_for(lambda: [p for p in gateway_pods(mesh) if ready(p)
                      and p["metadata"]["labels"].get("istio.io/rev") == R_NEW], what="retargeted gateway pod")
    ok(mesh.istioctl(NEW, "uninstall", "--revision", R_OLD, "-y"))
    assert c.store.get(DEPLOYMENTS, "istio-system", "istio-ingressgateway") is not None  # labels say NEW
    wait_for(lambda: gateway_pods(mesh) and not any(ready(p) for p in gateway_pods(mesh)),
             what="gateway pods NotReady after the old istiod is gone")


def test_uninstall_old_revision_deletes_istioctl_gateway_and_its_lb(mesh):
    c = mesh.cluster("blue")
    ok(mesh.istioctl(NEW, "install", "-y", "--revision", R_NEW, "--set", "profile=minimal"))
    svc = c.store.get(SERVICES, "istio-system", "istio-ingressgateway")
    assert svc["spec"]["type"] == "LoadBalancer" and svc["metadata"]["labels"]["istio.io/rev"] == R_OLD
    out = ok(mesh.istioctl(NEW, "uninstall", "--revision", R_OLD, "-y"))
    assert "You are about to remove the following gateways: istio-ingressgateway" in out
    assert "Service:istio-system:istio-ingressgateway" in out
    assert c.store.get(SERVICES, "istio-system", "istio-ingressgateway") is None
    assert c.store.get(DEPLOYMENTS, "istio-system", "istio-ingressgateway") is None
    assert c.store.get(DEPLOYMENTS, "istio-system", f"istiod-{R_NEW}") is not None


def test_uninstall_prompts_while_proxies_use_the_revision(mesh):
    c = mesh.cluster("blue")
    ok(mesh.istioctl(NEW, "install", "-y", "--revision", R_NEW, "--set", "profile=minimal"))
    cancelled = mesh.istioctl(NEW, "uninstall", "--revision", R_OLD, stdin="no\n")
    assert cancelled.returncode == 1
    assert f"There are still 1 proxies pointing to the control plane revision {R_OLD}" in cancelled.stdout
    assert cancelled.stdout.rstrip().endswith("Cancelled.")
    assert c.store.get(DEPLOYMENTS, "istio-system", f"istiod-{R_OLD}") is not None
    unknown = mesh.istioctl(NEW, "uninstall", "--revision", "nope", "-y")
    assert unknown.returncode == 1 and "could not find target revision" in unknown.stderr


def test_istioctl_plain_scenario(tmp_path):
    """A mesh a plain istioctl user leaves: settings only in the cluster's own objects, both gateway kinds."""
    with MeshHarness(tmp_path, ["blue"], {"scenario": "istioctl-plain", "route53": False}) as m:
        c = m.cluster("blue")
        cms = {o["metadata"]["name"]: o for o in c.store.list(("", "configmaps"), "istio-system")[0]}
        assert "meshops-install-overlay" not in cms  # no meshops record
        assert c.store.get(("apiextensions.k8s.io", "customresourcedefinitions"), "",
                           "istiooperators.install.istio.io") is None
        mesh_cfg = cms[f"istio-{R_OLD}"]["data"]["mesh"]
        assert "mode: REGISTRY_ONLY" in mesh_cfg and "holdApplicationUntilProxyStarts: true" in mesh_cfg
        istiod = c.store.get(DEPLOYMENTS, "istio-system", f"istiod-{R_OLD}")
        assert istiod["spec"]["replicas"] == 2
        discovery = istiod["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "PILOT_HTTP10", "value": "true"} in discovery["env"]
        assert discovery["resources"]["requests"]["cpu"] == "750m"
        hpa = c.store.get(("autoscaling", "horizontalpodautoscalers"), "istio-system", f"istiod-{R_OLD}")
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
        assert c.store.get(("security.istio.io", "peerauthentications"), "istio-system", "default")["spec"] == {
            "mtls": {"mode": "STRICT"}}
        # Both gateway kinds, ready: istioctl's (not injected) and a Helm-style injected one.
        (helm_pod,) = [p for p in c.store.list(PODS, "istio-ingress")[0] if ready(p)]
        proxy = helm_pod["spec"]["containers"][0]
        assert proxy["image"] == f"docker.io/istio/proxyv2:{OLD}-distroless"
        assert any(e["name"] == "PROXY_CONFIG" for e in proxy["env"])
        assert "istio-podinfo" in {v["name"] for v in helm_pod["spec"]["volumes"]}
        assert all(ready(p) for p in gateway_pods(m))
        app = next(p for p in c.store.list(PODS, "bookinfo-frontend")[0])
        assert app["spec"]["containers"][0]["name"] == "istio-proxy"  # holdApplicationUntilProxyStarts
        assert app["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "96Mi"}
        doc = __import__("json").loads(ok(m.istioctl(None, "version", "-o", "json")))
        assert {(v["Component"], v["Revision"], v["Info"]["version"]) for v in doc["meshVersion"]} == {
            ("istiod", R_OLD, OLD)}


def test_default_tag_side_effect_and_gateway_rewritten_in_place(mesh):
    c = mesh.cluster("blue")
    mwcs = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
    tag = c.store.get(mwcs, "", "istio-revision-tag-default")  # first revisioned install became the default
    assert tag["metadata"]["labels"]["istio.io/rev"] == R_OLD
    assert tag["metadata"]["labels"]["operator.istio.io/component"] == "Pilot"
    assert tag["metadata"]["labels"]["install.operator.istio.io/owning-resource-not-pruned"] == "true"
    # A second install whose profile includes the gateway rewrites the same Deployment and Service.
    out = ok(mesh.istioctl(NEW, "install", "-y", "--revision", R_NEW))
    assert "Made this installation the default" not in out
    dep = c.store.get(DEPLOYMENTS, "istio-system", "istio-ingressgateway")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CA_ADDR"] == f"istiod-{R_NEW}.istio-system.svc:15012"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"docker.io/istio/proxyv2:{NEW}"
    assert c.store.get(SERVICES, "istio-system", "istio-ingressgateway")["metadata"]["labels"]["istio.io/rev"] == R_NEW
    # A tag made by `tag set` has no operator labels, so uninstall leaves it alone.
    ok(mesh.istioctl(NEW, "tag", "set", "prod", "--revision", R_NEW))
    labels = c.store.get(mwcs, "", "istio-revision-tag-prod")["metadata"]["labels"]
    assert not [k for k in labels if "operator.istio.io" in k] and labels["istio.io/tag"] == "prod"
    tags = __import__("json").loads(ok(mesh.istioctl(NEW, "tag", "list", "-o", "json")))
    assert {(t["tag"], t["revision"]) for t in tags} == {("default", R_OLD), ("prod", R_NEW)}
    svc = c.store.get(SERVICES, "istio-system", "istiod-revision-tag-default")  # made by the install
    assert svc["metadata"]["labels"]["operator.istio.io/component"] == "Pilot"
    ok(mesh.istioctl(NEW, "tag", "set", "default", "--revision", R_NEW, "--overwrite", "-y"))
    moved = c.store.get(mwcs, "", "istio-revision-tag-default")["metadata"]["labels"]
    assert moved["istio.io/rev"] == R_NEW and not [k for k in moved if "operator.istio.io" in k]
    # Gateway pods go NotReady when the mesh ConfigMap their config-volume names is gone.
    wait_for(lambda: gateway_pods(mesh) and all(ready(p) and p["metadata"]["labels"]["istio.io/rev"] == R_NEW
                                                 for p in gateway_pods(mesh)), what="gateway on the new revision")
    c.api.delete(("", "configmaps"), "istio-system", f"istio-{R_NEW}")
    wait_for(lambda: not any(ready(p) for p in gateway_pods(mesh)), what="gateway NotReady without its ConfigMap")


def test_native_sidecars_on_127_with_kubernetes_133(tmp_path):
    """1.27's ENABLE_NATIVE_SIDECARS=auto: on when every kubelet is >= 1.33 (reference §5)."""
    with MeshHarness(tmp_path, ["blue"], {"istio": "1.27.1", "route53": False}, k8s_version="1.33.1") as m:
        c = m.cluster("blue")
        c.api.create(("", "namespaces"), {"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}})
        c.api.create(DEPLOYMENTS, {"metadata": {"name": "cart"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "cart"}},
            "template": {"metadata": {"labels": {"app": "cart"}},
                         "spec": {"containers": [{"name": "cart", "image": "nginx"}]}}}}, namespace="shop")
        pod = wait_for(lambda: next((p for p in c.store.list(PODS, "shop")[0] if ready(p)), None), what="cart pod")
        assert [x["name"] for x in pod["spec"]["containers"]] == ["cart"]
        proxy = pod["spec"]["initContainers"][-1]
        assert proxy["name"] == "istio-proxy" and proxy["restartPolicy"] == "Always"
        assert pod["status"]["initContainerStatuses"][-1]["state"].get("running") is not None
        status = ok(m.istioctl(None, "proxy-status"))
        assert status.splitlines()[0].split() == ["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED", "TYPES"]
        assert any(line.startswith("cart-") for line in status.splitlines())


def test_precheck_output_shapes(tmp_path):
    """x precheck (reference §4, §6): success on stderr with stdout empty even with -o json;
    any warning or worse on stdout and exit 1; 1.27 needs Kubernetes >= 1.29 (IST0142)."""
    with MeshHarness(tmp_path, ["blue"], {"istio": "1.24.1", "istio_versions": ["1.27.1"], "route53": False},
                     k8s_version="1.28.9") as m:
        fine = m.istioctl("1.24.1", "x", "precheck", "-o", "json")
        assert fine.returncode == 0 and fine.stdout == ""
        assert fine.stderr.startswith("✔ No issues found when checking the cluster. Istio is safe to install or upgrade!")
        low = m.istioctl("1.27.1", "x", "precheck", "-o", "json")
        assert low.returncode == 1
        (msg,) = __import__("json").loads(low.stdout)
        assert msg["code"] == "IST0142" and msg["level"] == "Error"
        assert "Issues found when checking the cluster. Istio may not be safe to install or upgrade." in low.stderr
