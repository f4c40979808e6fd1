"""Pure pieces of the Istio model: validation rules, profiles and overlays, rendered manifests."""

from __future__ import annotations

import pytest

from meshops.sandbox.istio import manifests, validation, webhooks
from meshops.sandbox.istio.profiles import ProfileError, apply_set, build_plan
from meshops.sandbox.istio.versions import IstioVersion, UnsupportedVersion, image_tag, valid_revision

V = IstioVersion.parse("1.24.1")


def vs(*routes, **extra):
    return {"spec": {"hosts": ["reviews"], "http": [{"route": list(routes)}], **extra}}


def dest(subset, weight=None):
    d = {"destination": {"host": "reviews", "subset": subset}}
    if weight is not None:
        d["weight"] = weight
    return d


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (vs(dest("v1", 50), dest("v2", 40)), "total destination weight 90 != 100"),
        (vs(dest("v1", 50), dest("v2")), "total destination weight 50 != 100"),
        (vs(dest("v1", 60), dest("v2", 50)), "total destination weight 110 != 100"),
        (vs(dest("v1", 80)), "total destination weight 80 != 100"),
        (vs(dest("v1"), retry=3), 'unknown field "retry" in spec'),
        (vs({"destination": {"host": "reviews", "subnet": "v1"}}), 'unknown field "subnet" in spec.http[0].route[0].destination'),
        (vs({"destination": {"subset": "v1"}}), "host is required"),
        ({"spec": {"hosts": ["r"], "http": [{"match": [{"uri": {"exact": "/"}}]}]}}, "HTTP route, redirect or direct response"),
    ],
)
def test_virtual_service_rejected(obj, problem):
    problems = validation.validate("VirtualService", obj)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "obj",
    [
        vs(dest("v1", 50), dest("v2", 30), dest("v3", 20)),
        vs(dest("v1")),  # a single destination needs no weight
        vs(dest("v1", 100)),
        {"spec": {"hosts": ["*"], "gateways": ["gw"], "http": [{"match": [{"uri": {"prefix": "/a"}}],
                                                             "route": [{"destination": {"host": "a", "port": {"number": 80}}}]}]}},
    ],
)
def test_virtual_service_accepted(obj):
    assert validation.validate("VirtualService", obj) == []


def test_other_kinds():
    assert validation.validate("PeerAuthentication", {"spec": {"mtls": {"mode": "STRICT"}}}) == []
    assert validation.validate("PeerAuthentication", {"spec": {"mtls": {"mode": "STRICTER"}}})
    assert validation.validate("DestinationRule", {"spec": {"host": "r", "trafficPolicy": {
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}}}}) == []
    assert validation.validate("DestinationRule", {"spec": {"host": "r", "trafficPolicy": {
        "outlierDetection": {"consecutive5xx": 5}}}})
    assert validation.validate("Gateway", {"spec": {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "protocol": "HTTP", "name": "http"}, "hosts": ["*"]}]}}) == []
    assert validation.validate("ServiceEntry", {"spec": {"hosts": ["a"], "bogus": 1}})
    assert validation.validate("ConfigMap", {"spec": {"anything": 1}}) == []  # not Istio's business


def test_profiles_components():
    assert build_plan(V).component_titles() == ["Istio core", "Istiod", "Ingress gateways"]
    assert build_plan(V, sets=["profile=demo"]).component_titles() == ["Istio core", "Istiod", "Ingress gateways",
                                                                       "Egress gateways"]
    assert build_plan(V, sets=["profile=minimal"]).component_titles() == ["Istio core", "Istiod"]
    with pytest.raises(ProfileError, match="does not exist"):
        build_plan(V, sets=["profile=nope"])


def test_overlay_precedence_file_then_set_then_flag():
    overlay = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
               "spec": {"profile": "demo", "revision": "from-file",
                        "components": {"egressGateways": [{"name": "istio-egressgateway", "enabled": False}],
                                       "pilot": {"k8s": {"replicaCount": 3}}},
                        "values": {"global": {"multiCluster": {"clusterName": "blue"}}}}}
    plan = build_plan(V, overlays=[overlay], sets=["revision=from-set", "components.pilot.k8s.replicaCount=2"])
    assert plan.profile == "demo"
    assert plan.revision == "from-set"
    assert plan.pilot_replicas == 2
    assert not plan.enabled_gateways("egress")  # the file's gateway entry merged by name
    assert plan.cluster_id == "blue"
    assert build_plan(V, overlays=[overlay], revision="1-24-1").revision == "1-24-1"
    assert build_plan(V, revision="default").revision == ""
    with pytest.raises(ProfileError, match="invalid revision"):
        build_plan(V, revision="1.24.1")


def test_apply_set_paths():
    spec: dict = {}
    apply_set(spec, "components.ingressGateways[0].enabled=false")
    apply_set(spec, "values.global.proxy.image=proxyv2")
    apply_set(spec, "meshConfig.accessLogFile=/dev/stdout")
    assert spec == {"components": {"ingressGateways": [{"enabled": False}]},
                    "values": {"global": {"proxy": {"image": "proxyv2"}}},
                    "meshConfig": {"accessLogFile": "/dev/stdout"}}


def test_revisioned_manifest_names():
    plan = build_plan(V, revision="1-24-1")
    objs = {(o["kind"], o["metadata"]["name"]) for c in manifests.render(plan) for o in c.objects}
    for expected in [("Deployment", "istiod-1-24-1"), ("Service", "istiod-1-24-1"),
                     ("ConfigMap", "istio-1-24-1"), ("ConfigMap", "istio-sidecar-injector-1-24-1"),
                     ("MutatingWebhookConfiguration", "istio-sidecar-injector-1-24-1"),
                     ("ValidatingWebhookConfiguration", "istio-validator-1-24-1-istio-system"),
                     ("Deployment", "istio-ingressgateway"), ("Service", "istio-ingressgateway"),
                     ("CustomResourceDefinition", "virtualservices.networking.istio.io")]:
        assert expected in objs
    dep = next(o for c in manifests.render(plan) for o in c.objects
               if o["kind"] == "Deployment" and o["metadata"]["name"] == "istiod-1-24-1")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/istio/pilot:1.24.1"
    assert dep["spec"]["template"]["metadata"]["labels"]["istio.io/rev"] == "1-24-1"
    svc = next(o for c in manifests.render(plan) for o in c.objects
               if o["kind"] == "Service" and o["metadata"]["name"] == "istio-ingressgateway")
    assert svc["spec"]["type"] == "LoadBalancer"
    # Negative control: istioctl >= 1.21 renders no IstioOperator (no installed-state) nor its CRD.
    assert not any(k == "IstioOperator" or n == "istiooperators.install.istio.io" for k, n in objs)


def test_unrevisioned_manifest_names():
    plan = build_plan(V)
    objs = {(o["kind"], o["metadata"]["name"]) for c in manifests.render(plan) for o in c.objects}
    assert ("Deployment", "istiod") in objs
    assert ("MutatingWebhookConfiguration", "istio-sidecar-injector") in objs
    assert ("ValidatingWebhookConfiguration", "istio-validator-istio-system") in objs
    assert webhooks.default_validator("")["metadata"]["name"] == "istiod-default-validator"


def test_versions():
    assert IstioVersion.parse("1.27.0").proxy_status_subscriptions
    assert not IstioVersion.parse("1.26.3").proxy_status_subscriptions
    assert IstioVersion.parse("1.23.0").install_emoji and not IstioVersion.parse("1.22.5").install_emoji
    assert IstioVersion.parse("1.23.2").default_revision_name == "1-23-2"
    with pytest.raises(UnsupportedVersion):
        IstioVersion.parse("2.0.0")
    assert image_tag("docker.io/istio/proxyv2:1.24.1") == "1.24.1"
    assert image_tag("localhost:5000/proxyv2") == ""
    assert valid_revision("canary") and not valid_revision("1.24") and not valid_revision("Canary")
