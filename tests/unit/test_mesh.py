"""The mesh snapshot: selectors, injection precedence, tags, webhooks, blockers (meshops.domain.mesh)."""

from __future__ import annotations

import pytest

from meshops.domain.mesh import selector_matches
from meshops.sandbox.istio import webhooks
from tests.support.canary_fixtures import (
    ns,
    pod,
    revision,
    snapshot,
    tag,
    unrevisioned_control_plane,
    workload,
)


@pytest.mark.parametrize(("selector", "labels", "ok"), [
    (None, {}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "x"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}, {"a": "x"}, False),
])
def test_label_selectors(selector: dict | None, labels: dict[str, str], ok: bool) -> None:
    """LabelSelector semantics as the API server evaluates webhook selectors."""
    assert selector_matches(selector, labels) is ok


def _mesh() -> list[dict]:
    return [*unrevisioned_control_plane(), *revision("1-25-2", "1.25.2"), *tag("prod-canary", "1-25-2")]


@pytest.mark.parametrize(("ns_labels", "pod_labels", "annotations", "expected"), [
    ({"istio-injection": "enabled"}, {}, {}, "default"),
    # the legacy label beats istio.io/rev on the namespace
    ({"istio-injection": "enabled", "istio.io/rev": "1-25-2"}, {}, {}, "default"),
    ({"istio-injection": "disabled"}, {}, {}, None),
    ({"istio.io/rev": "prod-canary"}, {}, {}, "1-25-2"),
    # the namespace label beats the pod label (istio/istio#48316)
    ({"istio.io/rev": "1-25-2"}, {"istio.io/rev": "default"}, {}, "1-25-2"),
    ({}, {"istio.io/rev": "1-25-2"}, {}, "1-25-2"),
    ({}, {"sidecar.istio.io/inject": "true"}, {}, "default"),
    ({}, {}, {}, None),
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, {}, None),
    ({"istio-injection": "enabled"}, {}, {"sidecar.istio.io/inject": "false"}, None),
])
def test_injection_precedence(ns_labels: dict, pod_labels: dict, annotations: dict, expected: str | None) -> None:
    """Which revision injects a new pod follows Istio's precedence, read from the webhooks themselves."""
    snap = snapshot([*_mesh(), ns("app", **ns_labels)])
    assert snap.injector_for("app", ns_labels, pod_labels, annotations) == expected


def test_ignored_namespaces_never_inject() -> None:
    """istiod skips kube-system whatever its labels say."""
    snap = snapshot(_mesh())
    assert snap.injector_for("kube-system", {"istio-injection": "enabled"}, {}) is None


def test_tags_default_and_validator() -> None:
    """Tags, the default revision and the validator's revision are read from the webhook configurations."""
    snap = snapshot(_mesh())
    assert snap.tags() == {"default": "default", "prod-canary": "1-25-2"}
    assert snap.default_revision() == "default" and snap.validator_revision() == "default"
    assert snap.resolve("prod-canary") == "1-25-2" and snap.resolve("nope") is None


def test_default_follows_the_tag_once_the_old_injector_is_deactivated() -> None:
    """After `tag set default` (old injector never-match, tag retargeted) the default is the new revision."""
    objs = _mesh()
    for o in objs:
        if o["kind"] == "MutatingWebhookConfiguration" and o["metadata"]["name"] == "istio-sidecar-injector":
            for w in o["webhooks"]:
                if w["name"].startswith(("namespace.", "object.")):
                    w["namespaceSelector"] = webhooks.NEVER_MATCH
        if o["metadata"]["name"] == "istio-revision-tag-default":
            o.update(webhooks.tag_configuration("default", "1-25-2"))
        if o["metadata"]["name"] == "istiod-default-validator":
            o.update(webhooks.default_validator("1-25-2"))
    snap = snapshot(objs)
    assert snap.default_revision() == "1-25-2" and snap.validator_revision() == "1-25-2"


def test_dangling_webhooks() -> None:
    """A webhook whose Service is gone is reported (istio/istio#35590)."""
    objs = [o for o in _mesh() if not (o["kind"] == "Service" and o["metadata"]["name"] == "istiod-1-25-2")]
    dangling = snapshot(objs).dangling_webhooks()
    assert dangling and all("istiod-1-25-2" in d for d in dangling)
    assert snapshot(_mesh()).dangling_webhooks() == []


def test_pods_proxies_and_owners() -> None:
    """Pods resolve to their workload (through the ReplicaSet), revision and proxy version."""
    objs = [*_mesh(), ns("a", **{"istio-injection": "enabled"}), workload("a", "web"),
            pod("a", "web-1", owner=("Deployment", "web"), revision="default"),
            pod("a", "web-2", owner=("Deployment", "web"), revision="1-25-2", version="1.25.2"),
            pod("a", "done", owner=("Job", "j"), revision="default", phase="Succeeded")]
    snap = snapshot(objs)
    assert [p.name for p in snap.pods_of(snap.workloads["Deployment/a/web"])] == ["web-1", "web-2"]
    assert snap.proxies_by_revision() == {"1-25-2": 1, "default": 1}  # the Succeeded pod does not count
    assert snap.proxies_by_version() == {"1.24.1": 1, "1.25.2": 1}


def test_blockers() -> None:
    """Naked, Job, OnDelete, opted-out and terminal pods and overriding labels are each reported."""
    objs = [*_mesh(), ns("a", **{"istio-injection": "enabled"}), ns("b", **{"istio.io/rev": "prod-canary"}),
            pod("a", "naked", revision="default"),
            pod("a", "job-x", owner=("Job", "job"), revision="default"),
            pod("a", "done", owner=("Job", "old"), revision="default", phase="Failed"),
            workload("a", "db", kind="StatefulSet", strategy="OnDelete"),
            pod("a", "db-0", owner=("StatefulSet", "db"), revision="default"),
            workload("a", "opt", labels={"sidecar.istio.io/inject": "false"}),
            pod("a", "opt-1", owner=("Deployment", "opt"), labels={"sidecar.istio.io/inject": "false"}),
            workload("b", "pinned", labels={"istio.io/rev": "default"})]
    found = {(b.kind, b.ref, b.holds_old) for b in snapshot(objs).blockers("default")}
    assert found == {
        ("naked_pod", "a/naked", True), ("job_pod", "a/job-x", True), ("terminal_pod", "a/done", False),
        ("ondelete", "StatefulSet/a/db", True), ("opted_out", "a/opt-1", False),
        ("label_override", "Deployment/b/pinned", False),
    }


def test_installed_gateways_carry_their_revision_as_a_label() -> None:
    """A gateway installed by istioctl is not injected: its revision is its istio.io/rev label."""
    gw = workload("istio-system", "istio-ingressgateway", gateway=True)
    objs = [*_mesh(), gw, pod("istio-system", "gw-1", owner=("Deployment", "istio-ingressgateway"),
                                 labels={"istio.io/rev": "default"})]
    objs[-1]["spec"]["containers"] = [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1"}]
    snap = snapshot(objs)
    (w,) = snap.gateways()
    assert w.gateway == "installed" and snap.gateway_revision(w) == "default"
    assert snap.proxies_by_revision() == {"default": 1}
