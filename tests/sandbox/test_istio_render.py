"""What `istioctl install` renders and what injection writes, per version (reference §1, §2, §5, §7).

Pure functions only: fast, no cluster.
"""

from __future__ import annotations

import json

import pytest

from meshops.sandbox.apiserver.controllers.kubelet import image_id
from meshops.sandbox.istio import gateways, injection, manifests
from meshops.sandbox.istio.profiles import ProfileError, build_plan
from meshops.sandbox.istio.versions import IstioVersion, image_tag


def objects(version: str, **kw):
    plan = build_plan(IstioVersion.parse(version), **kw)
    return {(o["kind"], o["metadata"]["name"]): o for c in manifests.render(plan) for o in c.objects}


@pytest.mark.parametrize("version", ["1.22.4", "1.23.3", "1.24.1", "1.25.0", "1.26.3", "1.27.1"])
def test_injector_values_is_the_reference_subset(version):
    minor = IstioVersion.parse(version).minor
    objs = objects(version, revision="r1", sets=["meshConfig.accessLogFile=/dev/stdout",
                                                  "values.pilot.env.PILOT_HTTP10=true",
                                                  "components.pilot.k8s.replicaCount=3"])
    values = json.loads(objs[("ConfigMap", "istio-sidecar-injector-r1")]["data"]["values"])
    expected = {"global", "sidecarInjectorWebhook", "revision", "pilot"}
    expected |= {"gateways"} if minor >= 23 else set()
    expected |= {"istio_cni"} if minor <= 23 else set()
    assert set(values) == expected
    assert set(values["pilot"]) == ({"cni", "env"} if minor >= 26 else {"cni"})
    assert values["global"]["tag"] == version and values["global"]["proxy"]["image"] == "proxyv2"
    assert "meshConfig" not in values and "replicaCount" not in json.dumps(values)
    # values-R only from 1.26 (PR #55803), with user input and the merged result
    if minor >= 26:
        vals = objs[("ConfigMap", "values-r1")]
        assert set(vals["data"]) == {"original-values", "merged-values"}
        assert "debugging" in vals["metadata"]["annotations"]["kubernetes.io/description"]
        assert json.loads(vals["data"]["original-values"])["meshConfig"] == {"accessLogFile": "/dev/stdout"}
        assert json.loads(vals["data"]["merged-values"])["meshConfig"]["accessLogFile"] == "/dev/stdout"
    else:
        assert ("ConfigMap", "values-r1") not in objs
    assert "accessLogFile: /dev/stdout" in objs[("ConfigMap", "istio-r1")]["data"]["mesh"]
    assert objs[("ConfigMap", "istio-r1")]["data"]["meshNetworks"].strip() == "networks: {}"


def test_labels_and_names_per_version():
    new = objects("1.24.1", revision="r1")
    old = objects("1.22.4", revision="r1")
    dep_new = new[("Deployment", "istiod-r1")]
    assert dep_new["metadata"]["labels"]["install.operator.istio.io/owning-resource"] == "unknown"
    assert dep_new["metadata"]["labels"]["operator.istio.io/managed"] == "Reconcile"
    assert old[("Deployment", "istiod-r1")]["metadata"]["labels"][
        "install.operator.istio.io/owning-resource"] == "installed-state-r1"
    pod = dep_new["spec"]["template"]["metadata"]["labels"]
    assert pod["istio"] == "istiod" and pod["istio.io/rev"] == "r1" and pod["sidecar.istio.io/inject"] == "false"
    assert dep_new["spec"]["selector"]["matchLabels"] == {"app": "istiod", "istio.io/rev": "r1"}
    for kind in ("Service", "ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert (kind, "istiod-r1") in new
    assert ("MutatingWebhookConfiguration", "istio-sidecar-injector-r1") in new
    assert ("ValidatingWebhookConfiguration", "istio-validator-r1-istio-system") in new
    default = objects("1.24.1")
    dep = default[("Deployment", "istiod")]
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "istiod", "istio": "pilot"}
    assert dep["spec"]["template"]["metadata"]["labels"]["istio"] == "pilot"
    named = objects("1.24.1", overlays=[{"kind": "IstioOperator", "metadata": {"name": "prod"}, "spec": {}}])
    assert named[("Deployment", "istiod")]["metadata"]["labels"]["install.operator.istio.io/owning-resource"] == "prod"


def test_istioctl_gateway_as_the_chart_renders_it():
    objs = objects("1.27.1", revision="r2", sets=["values.global.variant=distroless"])
    dep = objs[("Deployment", "istio-ingressgateway")]
    pod = dep["spec"]["template"]
    (proxy,) = pod["spec"]["containers"]
    assert proxy["image"] == "docker.io/istio/proxyv2:1.27.1-distroless"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["CA_ADDR"] == "istiod-r2.istio-system.svc:15012"
    assert "PROXY_CONFIG" not in env
    for name in ("POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "ISTIO_META_WORKLOAD_NAME", "ISTIO_META_OWNER",
                 "ISTIO_META_MESH_ID", "ISTIO_META_UNPRIVILEGED_POD", "ISTIO_META_NETWORK", "ISTIO_META_CLUSTER_ID",
                 "ISTIO_META_NODE_NAME", "TRUST_DOMAIN", "PILOT_CERT_PROVIDER"):
        assert name in env
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["config-volume"]["configMap"]["name"] == "istio-r2"
    assert {"workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data", "istiod-ca-cert",
            "podinfo", "istio-token"} <= set(vols)
    assert vols["istio-token"]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 43200
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"}
    labels = pod["metadata"]["labels"]
    assert labels["app"] == "istio-ingressgateway" and labels["istio"] == "ingressgateway"
    assert labels["istio.io/rev"] == "r2" and labels["sidecar.istio.io/inject"] == "false"
    assert labels["operator.istio.io/component"] == "IngressGateways"
    assert labels["service.istio.io/canonical-revision"] == "r2"
    assert labels["istio.io/dataplane-mode"] == "none"  # 1.27
    assert "istio.io/dataplane-mode" not in objects("1.26.3")[("Deployment", "istio-ingressgateway")][
        "spec"]["template"]["metadata"]["labels"]
    svc = objs[("Service", "istio-ingressgateway")]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("status-port", 15021, 15021), ("http2", 80, 8080), ("https", 443, 8443)]
    assert svc["spec"]["selector"] == {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    assert svc["metadata"]["labels"]["istio.io/rev"] == "r2"
    assert svc["metadata"]["labels"]["operator.istio.io/component"] == "IngressGateways"
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert (kind, "istio-ingressgateway") in objs
    # injectionTemplate: gateway renders the injected deployment instead
    inj = objects("1.27.1", sets=["values.gateways.istio-ingressgateway.injectionTemplate=gateway"])
    tmpl = inj[("Deployment", "istio-ingressgateway")]["spec"]["template"]
    assert tmpl["spec"]["containers"][0]["image"] == "auto"
    assert tmpl["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway"
    assert tmpl["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"


def test_helm_gateway_chart_shape():
    _sa, dep, svc = gateways.helm_gateway("istio-ingress", "istio-ingress", revision="canary")
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "istio-ingress", "istio": "ingress"}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "true" and labels["istio.io/rev"] == "canary"
    assert dep["spec"]["template"]["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "auto"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(15021, 15021), (80, 80), (443, 443)]
    assert "operator.istio.io/component" not in dep["metadata"]["labels"]
    assert "istio.io/rev" not in gateways.helm_gateway("gw", "ns")[1]["spec"]["template"]["metadata"]["labels"]


def pod(annotations=None):
    return {"metadata": {"name": "p", "labels": {"app": "web"}, "annotations": dict(annotations or {})},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}


def test_injection_status_images_and_native_sidecars():
    p = pod()
    injection.inject(p, revision="r1", version="1.24.1", variant="distroless")
    meta = p["metadata"]
    assert meta["annotations"]["istio.io/rev"] == "r1" and "istio.io/rev" not in meta["labels"]
    status = json.loads(meta["annotations"]["sidecar.istio.io/status"])
    assert list(status) == ["initContainers", "containers", "volumes", "imagePullSecrets", "revision"]
    assert p["spec"]["containers"][-1]["image"] == "docker.io/istio/proxyv2:1.24.1-distroless"
    q = pod({"sidecar.istio.io/proxyImageType": "debug"})
    injection.inject(q, revision="r1", version="1.24.1", variant="distroless")
    assert q["spec"]["containers"][-1]["image"] == "docker.io/istio/proxyv2:1.24.1-debug"
    r = pod({"sidecar.istio.io/proxyImageType": "default"})
    injection.inject(r, revision="r1", version="1.24.1", variant="distroless")
    assert r["spec"]["containers"][-1]["image"] == "docker.io/istio/proxyv2:1.24.1"
    pinned = "registry.example/istio/proxyv2@sha256:" + "a" * 64
    d = pod({"sidecar.istio.io/proxyImage": pinned})
    injection.inject(d, revision="r1", version="1.24.1")
    assert d["spec"]["containers"][-1]["image"] == pinned and image_id(pinned) == pinned
    assert image_tag("docker.io/istio/proxyv2:1.24.1-distroless") == "1.24.1"
    assert image_id("docker.io/istio/proxyv2:1.24.1").startswith("docker.io/istio/proxyv2@sha256:")
    # native sidecars: 1.27 default auto (kubelets >= 1.33), annotation override; off before 1.27
    assert injection.native_sidecar(pod(), minor=27, setting="", kubelet_minors=[33, 33])
    assert not injection.native_sidecar(pod(), minor=27, setting="", kubelet_minors=[33, 32])
    assert injection.native_sidecar(pod({"sidecar.istio.io/nativeSidecar": "true"}), minor=27, setting="",
                                    kubelet_minors=[30])
    assert not injection.native_sidecar(pod(), minor=26, setting="", kubelet_minors=[33])
    assert injection.native_sidecar(pod(), minor=26, setting="true", kubelet_minors=[30])
    n = pod()
    injection.inject(n, revision="r1", version="1.27.1", native=True)
    assert [c["name"] for c in n["spec"]["containers"]] == ["web"]
    sidecar = n["spec"]["initContainers"][-1]
    assert sidecar["name"] == "istio-proxy" and sidecar["restartPolicy"] == "Always"
    assert injection.proxy_revision(n) == "r1"
    assert json.loads(n["metadata"]["annotations"]["sidecar.istio.io/status"])["initContainers"] == [
        "istio-init", "istio-proxy"]


def test_version_rules():
    v122, v124, v127 = (IstioVersion.parse(v) for v in ("1.22.4", "1.24.1", "1.27.1"))
    assert build_plan(v122, sets=["values.compatibilityVersion=1.20"])
    with pytest.raises(ProfileError, match="unknown compatibility version"):
        build_plan(v124, sets=["values.compatibilityVersion=1.20"])  # 1.24 dropped the 1.20 profile
    compat = build_plan(v127, sets=["values.compatibilityVersion=1.24"])
    assert compat.values["pilot"]["env"]["ENABLE_NATIVE_SIDECARS"] == "false"  # the 1.24-1.26 profiles
    plan = build_plan(v122, sets=["values.global.jwtPolicy=first-party-jwt"])
    assert plan.warnings and plan.values["global"]["jwtPolicy"] == "third-party-jwt"
    assert [IstioVersion.parse(f"1.{m}.0").min_k8s_minor for m in range(22, 28)] == [26, 26, 28, 28, 29, 29]


def test_removed_commands_per_version():
    from meshops.sandbox.istio.istioctl.app import UsageError, build_parser

    assert build_parser(IstioVersion.parse("1.23.3")).parse_args(["profile", "list"])
    with pytest.raises(UsageError, match='unknown command "profile"'):
        build_parser(IstioVersion.parse("1.24.1")).parse_args(["profile", "list"])  # removed in 1.24
    assert build_parser(IstioVersion.parse("1.24.1")).parse_args(["analyze", "--recursive=true"])
    with pytest.raises(UsageError, match="unknown flag"):
        build_parser(IstioVersion.parse("1.25.0")).parse_args(["analyze", "--recursive=true"])  # removed in 1.25
