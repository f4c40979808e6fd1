"""Injection precedence, case by case, from the webhook configurations Istio installs.

Each case builds the MutatingWebhookConfigurations a real install (or tag command) leaves in
the cluster and asks which revision a new pod would get. The expectations are the rules in
../shared/reference/istio.md, not values read back from the implementation.
"""

from __future__ import annotations

import json

import pytest

from meshops.sandbox.istio import injection, webhooks


def pod(labels=None, annotations=None, **spec):
    return {
        "metadata": {"name": "web-1", "labels": dict(labels or {}), "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "web", "image": "nginx"}], **spec},
    }


def unrevisioned():
    """`istioctl install` with no revision: its injector plus the `default` tag it creates."""
    return [webhooks.injector_configuration(""), webhooks.tag_configuration("default", "")]


def revisioned(*revs, default=None, tags=None):
    """Revisioned installs, an optional default tag and other tags {tag: rev}."""
    confs = [webhooks.injector_configuration(r) for r in revs]
    if default:
        confs.append(webhooks.tag_configuration("default", default))
    for tag, rev in (tags or {}).items():
        confs.append(webhooks.tag_configuration(tag, rev))
    return confs


def decide(confs, ns_labels, p, namespace="app"):
    return injection.injecting_revision(confs, namespace=namespace, namespace_labels=ns_labels, pod=p)


CASES = [
    # (id, configurations, namespace labels, pod, expected revision[, namespace])
    ("legacy-enabled", unrevisioned(), {"istio-injection": "enabled"}, pod(), "default"),
    ("legacy-disabled", unrevisioned(), {"istio-injection": "disabled"}, pod(), None),
    ("legacy-disabled-beats-pod-rev", revisioned("canary", default="canary"),
     {"istio-injection": "disabled"}, pod({"istio.io/rev": "canary"}), None),
    ("legacy-beats-ns-rev", revisioned("stable", "canary", default="stable"),
     {"istio-injection": "enabled", "istio.io/rev": "canary"}, pod(), "stable"),
    ("ns-rev", revisioned("stable", "canary", default="stable"), {"istio.io/rev": "canary"}, pod(), "canary"),
    ("ns-rev-beats-pod-rev", revisioned("stable", "canary", default="stable"),
     {"istio.io/rev": "canary"}, pod({"istio.io/rev": "stable"}), "canary"),
    ("pod-rev-in-unlabelled-ns", revisioned("stable", "canary", default="stable"),
     {}, pod({"istio.io/rev": "canary"}), "canary"),
    ("pod-inject-true-uses-default", revisioned("stable", "canary", default="stable"),
     {}, pod({"sidecar.istio.io/inject": "true"}), "stable"),
    ("pod-inject-true-and-rev", revisioned("stable", "canary", default="stable"),
     {}, pod({"sidecar.istio.io/inject": "true", "istio.io/rev": "canary"}), "canary"),
    ("pod-opt-out-in-enabled-ns", unrevisioned(), {"istio-injection": "enabled"},
     pod({"sidecar.istio.io/inject": "false"}), None),
    ("pod-opt-out-in-rev-ns", revisioned("canary"), {"istio.io/rev": "canary"},
     pod({"sidecar.istio.io/inject": "false"}), None),
    ("unlabelled-ns-unlabelled-pod", unrevisioned(), {}, pod(), None),
    ("tag-in-ns", revisioned("1-24-1", default="1-24-1", tags={"prod-stable": "1-24-1"}),
     {"istio.io/rev": "prod-stable"}, pod(), "1-24-1"),
    ("moved-tag", revisioned("1-24-1", "1-25-0", default="1-24-1", tags={"prod-stable": "1-25-0"}),
     {"istio.io/rev": "prod-stable"}, pod(), "1-25-0"),
    ("unknown-tag", revisioned("1-24-1", default="1-24-1"), {"istio.io/rev": "nosuch"}, pod(), None),
    ("default-tag-by-name", revisioned("1-24-1", "1-25-0", default="1-25-0"),
     {"istio.io/rev": "default"}, pod(), "1-25-0"),
    ("no-default-revision", revisioned("canary"), {"istio-injection": "enabled"}, pod(), None),
    ("kube-system-ignored", unrevisioned(), {"istio-injection": "enabled"}, pod(), None, "kube-system"),
    ("host-network", unrevisioned(), {"istio-injection": "enabled"}, pod(hostNetwork=True), None),
    ("already-injected", unrevisioned(), {"istio-injection": "enabled"},
     pod(annotations={"sidecar.istio.io/status": "{}"}), None),
    ("annotation-opt-out", unrevisioned(), {"istio-injection": "enabled"},
     pod(annotations={"sidecar.istio.io/inject": "false"}), None),
]


@pytest.mark.parametrize(("confs", "ns_labels", "p", "expected", "namespace"),
                         [(*c[1:5], c[5] if len(c) > 5 else "app") for c in CASES], ids=[c[0] for c in CASES])
def test_precedence(confs, ns_labels, p, expected, namespace):
    assert decide(confs, ns_labels, p, namespace=namespace) == expected


def test_tag_set_default_moves_legacy_label_to_new_revision():
    # Unrevisioned 1.23 install, then a canary and `istioctl tag set default --revision canary`:
    # the old injector is deactivated and the default tag now points at canary.
    old = webhooks.deactivate(webhooks.injector_configuration(""))
    confs = [old, webhooks.injector_configuration("canary"), webhooks.tag_configuration("default", "canary")]
    assert decide(confs, {"istio-injection": "enabled"}, pod()) == "canary"
    assert decide([webhooks.injector_configuration(""), *confs[1:]], {"istio-injection": "enabled"}, pod()) == "canary"


def test_second_default_injector_is_resolved_by_configuration_name():
    # istio/istio#48643: an unrevisioned install into a cluster whose default tag points at 1-23.
    # The API server calls both; the first by name injects and the second sees the status annotation.
    confs = [webhooks.injector_configuration(""), *revisioned("1-23", default="1-23")]
    matched = injection.matching_webhooks(confs, namespace="app", namespace_labels={"istio-injection": "enabled"},
                                          object_labels={})
    assert [m.configuration for m in matched] == ["istio-revision-tag-default", "istio-sidecar-injector"]
    assert decide(confs, {"istio-injection": "enabled"}, pod()) == "1-23"


def test_inject_sidecar_shape():
    p = pod({"app": "reviews", "version": "v2"})
    injection.inject(p, revision="1-24-1", version="1.24.1")
    names = [c["name"] for c in p["spec"]["containers"]]
    assert names == ["web", "istio-proxy"]
    assert p["spec"]["containers"][1]["image"] == "docker.io/istio/proxyv2:1.24.1"
    assert [c["name"] for c in p["spec"]["initContainers"]] == ["istio-init"]
    status = json.loads(p["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["revision"] == "1-24-1"
    assert status["containers"] == ["istio-proxy"]
    assert status["initContainers"] == ["istio-init"]
    assert status["imagePullSecrets"] is None
    assert p["metadata"]["annotations"]["istio.io/rev"] == "1-24-1"
    labels = p["metadata"]["labels"]
    assert labels["service.istio.io/canonical-name"] == "reviews"
    assert labels["service.istio.io/canonical-revision"] == "v2"
    assert "istio.io/rev" not in labels  # istio/istio#42290
    assert injection.proxy_revision(p) == "1-24-1"


def test_inject_gateway_template_fills_image_auto():
    p = pod({"istio": "ingressgateway"}, {"inject.istio.io/templates": "gateway"})
    p["spec"]["containers"] = [{"name": "istio-proxy", "image": "auto", "ports": [{"containerPort": 8080}]}]
    injection.inject(p, revision="canary", version="1.25.0")
    (proxy,) = p["spec"]["containers"]
    assert proxy["image"] == "docker.io/istio/proxyv2:1.25.0"
    assert proxy["ports"] == [{"containerPort": 8080}]  # the user's fields survive
    assert "router" in proxy["args"]
    assert "initContainers" not in p["spec"]
    assert json.loads(p["metadata"]["annotations"]["sidecar.istio.io/status"])["initContainers"] is None
    assert injection.is_gateway_proxy(p)


def test_pod_without_proxy_has_no_revision():
    assert injection.proxy_revision(pod()) is None
