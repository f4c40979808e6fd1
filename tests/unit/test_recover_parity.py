"""Settings recovered from a running control plane; parity between revisions; guards by identity;
settings the target removed; compatibility versions (reference §1, §7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from meshops.domain import parity
from meshops.domain.identity import protected_by
from meshops.domain.recover import LiveInstall, recover
from meshops.domain.versions import IstioVersion, compatibility_problem, compatibility_versions
from meshops.ops.istio_settings import removed_settings

MESH = {"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        "defaultConfig": {"discoveryAddress": "istiod-1-24-1.istio-system.svc:15012",
                          "holdApplicationUntilProxyStarts": True}, "trustDomain": "cluster.local"}
VALUES = {"global": {"hub": "docker.io/istio", "tag": "1.24.1", "variant": "distroless",
                     "proxy": {"image": "proxyv2", "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}},
          "revision": "1-24-1", "sidecarInjectorWebhook": {}, "pilot": {"cni": {"enabled": False}},
          "istio_cni": {"enabled": True}}


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "istio-system"},
            "data": data}


def _istiod(env: list[dict[str, Any]], replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod-1-24-1"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{
                "name": "discovery", "image": "docker.io/istio/pilot:1.24.1-distroless",
                "resources": {"requests": {"cpu": "750m", "memory": "3Gi"}},
                "env": env}]}}}}


ENV = [{"name": "REVISION", "value": "1-24-1"}, {"name": "PILOT_TRACE_SAMPLING", "value": "5"},
       {"name": "PILOT_ENABLE_STATUS", "value": "true"},
       {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
HPA = {"spec": {"minReplicas": 2, "maxReplicas": 6, "metrics": [
    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}


def _live(**over: Any) -> LiveInstall:
    kw: dict[str, Any] = {"revision": "1-24-1", "mesh_configmap": _cm("istio-1-24-1", mesh=yaml.safe_dump(MESH)),
                          "injector_configmap": _cm("istio-sidecar-injector-1-24-1", values=json.dumps(VALUES)),
                          "values_configmap": None, "istiod": _istiod(ENV), "hpa": HPA,
                          "pdb": {"spec": {"minAvailable": 1}}}
    kw.update(over)
    return LiveInstall(**kw)


def test_recover_every_source() -> None:
    rec = recover(_live())
    spec = rec.spec
    assert rec.unrecoverable == {}
    assert spec["meshConfig"]["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}
    assert spec["meshConfig"]["defaultConfig"] == {"holdApplicationUntilProxyStarts": True}  # no old discoveryAddress
    assert spec["values"]["global"]["variant"] == "distroless"
    assert "tag" not in spec["values"]["global"] and "revision" not in spec["values"]
    assert spec["values"]["global"]["proxy"]["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}}
    assert spec["values"]["pilot"]["cni"] == {"enabled": True}  # istio_cni (1.22-1.23) -> pilot.cni
    assert "istio_cni" not in spec["values"]
    assert spec["values"]["pilot"]["env"] == {"PILOT_ENABLE_STATUS": "true"}  # chart env left to the chart
    assert spec["values"]["pilot"]["traceSampling"] == 5.0
    assert spec["values"]["pilot"]["autoscaleMin"] == 2 and spec["values"]["pilot"]["autoscaleMax"] == 6
    assert spec["values"]["pilot"]["cpu"] == {"targetAverageUtilization": 70}
    assert spec["values"]["global"]["defaultPodDisruptionBudget"] == {"enabled": True}
    assert spec["components"]["pilot"]["k8s"] == {"resources": {"requests": {"cpu": "750m", "memory": "3Gi"}}}
    # Without an HPA the replica count is the Deployment's, and autoscaling is off.
    rec = recover(_live(hpa=None, pdb=None))
    assert rec.spec["components"]["pilot"]["k8s"]["replicaCount"] == 2
    assert rec.spec["values"]["pilot"]["autoscaleEnabled"] is False
    assert rec.spec["values"]["global"]["defaultPodDisruptionBudget"] == {"enabled": False}


def test_recover_names_what_it_cannot() -> None:
    env = [*ENV, {"name": "MY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    rec = recover(_live(mesh_configmap=_cm("istio-1-24-1"), istiod=_istiod(env)))
    assert set(rec.unrecoverable) == {"meshConfig", "values.pilot.env.MY_TOKEN"}
    assert "ConfigMap istio-system/istio-1-24-1 key mesh is missing" in rec.unrecoverable["meshConfig"]
    assert set(rec.refused(["meshConfig"])) == {"values.pilot.env.MY_TOKEN"}
    assert rec.refused(["meshConfig", "values.pilot.env"]) == {}
    assert rec.refused(["*"]) == {}


def test_original_values_fill_gaps_only() -> None:
    orig = yaml.safe_dump({"meshConfig": {"accessLogFile": "/dev/null", "enableTracing": True},
                           "autoscaleMax": 9, "env": {"FROM_USER": "1"}, "global": {"logAsJson": True}})
    rec = recover(_live(values_configmap=_cm("values-1-24-1", **{"original-values": orig})))
    assert rec.spec["meshConfig"]["accessLogFile"] == "/dev/stdout"  # the running value wins
    assert rec.spec["meshConfig"]["enableTracing"] is True
    assert rec.spec["values"]["global"]["logAsJson"] is True
    assert rec.spec["values"]["pilot"]["autoscaleMax"] == 6  # the HPA says what runs


def _effective(live: LiveInstall) -> dict[str, Any]:
    return parity.effective(live)


def test_parity_same_settings_other_revision() -> None:
    old = _effective(_live())
    new_mesh = {**MESH, "defaultConfig": {**MESH["defaultConfig"], "discoveryAddress": "istiod-1-25-2.istio-system.svc:15012"}}
    new = _effective(_live(revision="1-25-2", mesh_configmap=_cm("istio-1-25-2", mesh=yaml.safe_dump(new_mesh)),
                           injector_configmap=_cm("x", values=json.dumps({**VALUES, "revision": "1-25-2",
                                                                          "global": {**VALUES["global"], "tag": "1.25.2"}})),
                           istiod=_istiod([{"name": "REVISION", "value": "1-25-2"}, *ENV[1:]])))
    report = parity.compare(old, new, target_minor=25, from_minor=24)
    assert report.ok and report.unexpected == () and report.requested == ()


def test_parity_stops_a_silent_outbound_policy_change() -> None:
    old = _effective(_live())
    mesh = {k: v for k, v in MESH.items() if k != "outboundTrafficPolicy"}
    new = _effective(_live(revision="1-25-2", mesh_configmap=_cm("istio-1-25-2", mesh=yaml.safe_dump(mesh))))
    report = parity.compare(old, new, target_minor=25)
    assert [d.path for d in report.unexpected] == ["mesh.outboundTrafficPolicy.mode"]
    # Asked for: listed, not stopped.
    asked = parity.compare(old, new, requested=parity.requested_paths(["meshConfig.outboundTrafficPolicy.mode"]),
                           target_minor=25)
    assert asked.ok and [d.path for d in asked.requested] == ["mesh.outboundTrafficPolicy.mode"]
    # A policy appearing out of nowhere is not a "new default".
    added = parity.compare(_effective(_live(mesh_configmap=_cm("m", mesh=yaml.safe_dump(mesh)))), old, target_minor=25)
    assert [d.path for d in added.unexpected] == ["mesh.outboundTrafficPolicy.mode"]


def test_parity_documented_and_new_defaults() -> None:
    old = _effective(_live(istiod=_istiod([*ENV, {"name": "ENABLE_AUTO_SNI", "value": "true"}])))
    new = _effective(_live(mesh_configmap=_cm("m", mesh=yaml.safe_dump({**MESH, "enablePrometheusMerge": True}))))
    report = parity.compare(old, new, target_minor=26, from_minor=25)
    assert report.ok
    assert {d.path for d in report.documented} == {"istiod.env.ENABLE_AUTO_SNI", "mesh.enablePrometheusMerge"}
    # istiod resources, replicas and the HPA are compared on the objects.
    changed = _effective(_live(hpa={"spec": {**HPA["spec"], "minReplicas": 1}}))
    assert [d.path for d in parity.compare(old, changed, target_minor=26).unexpected] == ["hpa.minReplicas"]
    # Going to 1.25, ENABLE_AUTO_SNI still exists: losing it is not documented.
    assert [d.path for d in parity.compare(old, new, target_minor=25).unexpected] == ["istiod.env.ENABLE_AUTO_SNI"]


def test_webhook_selectors_compared_without_the_revision_name() -> None:
    def mwc(rev: str, key: str = "istio.io/rev") -> dict[str, Any]:
        return {"webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io", "namespaceSelector": {
            "matchExpressions": [{"key": key, "operator": "In", "values": [rev]},
                                 {"key": "istio-injection", "operator": "DoesNotExist"}]}}]}
    old = parity.effective(_live(), mwc("1-24-1"))
    assert parity.compare(old, parity.effective(_live(revision="1-25-2"), mwc("1-25-2"))).ok
    bad = parity.compare(old, parity.effective(_live(revision="1-25-2"), mwc("1-25-2", key="other")))
    assert [d.path for d in bad.unexpected] == ["webhook.rev.namespace.sidecar-injector.istio.io.namespaceSelector"]


def test_policy_state_drift() -> None:
    pa = {"metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    before = parity.policy_state(mesh=MESH, peer_authentications=[pa], destination_rules=[], egress_gateways=[])
    after = parity.policy_state(mesh={}, peer_authentications=[pa], destination_rules=[], egress_gateways=[])
    assert before.drift(before) == []
    assert before.drift(after) == ['outboundTrafficPolicy: "REGISTRY_ONLY" -> "ALLOW_ANY"']


@pytest.mark.parametrize(("context", "server", "hit"), [
    ("arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu", "", "prod* (prod-eu)"),
    ("gke_acme-prod_europe-west1-b_payments", "", "pay* (payments)"),
    ("prod-east", "", "prod*"),
    ("staging", "https://prod-api.example.com:6443", "prod* (prod-api.example.com)"),
    ("arn:aws:eks:eu-west-1:123456789012:cluster/staging-eu", "https://ABC.gr7.eu-west-1.eks.amazonaws.com", None),
])
def test_protect_matches_identity(context: str, server: str, hit: str | None) -> None:
    pattern = hit.split(" ")[0] if hit else "prod*"
    assert protected_by([pattern], context, server) == ([hit] if hit else [])


def test_removed_settings_and_compatibility_versions() -> None:
    spec = {"values": {"global": {"jwtPolicy": "first-party-jwt"}, "pilot": {"env": {"ENABLE_AUTO_SNI": "true"}}}}
    assert set(removed_settings(spec, 26)) == {"values.global.jwtPolicy", "values.pilot.env.ENABLE_AUTO_SNI"}
    assert set(removed_settings(spec, 25)) == {"values.global.jwtPolicy"}
    assert compatibility_versions(IstioVersion.parse("1.27.0")) == ["1.24", "1.25", "1.26"]
    assert compatibility_versions(IstioVersion.parse("1.22.3")) == ["1.20", "1.21"]
    assert compatibility_problem(IstioVersion.parse("1.25.2"), "1.24") is None
    assert "ships compatibility versions 1.22, 1.23, 1.24" in (compatibility_problem(IstioVersion.parse("1.25.2"), "1.21") or "")


def test_status_shows_drift_between_revisions() -> None:
    """`meshops status`: fields that differ between the default revision and another, named."""
    from meshops.cli.upgrade_status import revision_drift
    from meshops.drivers.kube_fake import FakeKube
    from tests.support.canary_fixtures import config_maps, revision, unrevisioned_control_plane

    kube = FakeKube()
    kube.apply(*unrevisioned_control_plane(), *revision("1-25-2", "1.25.2"))
    assert revision_drift(kube, "default", ["1-25-2", "default"], "istio-system") == {"1-25-2 -> default": []}
    kube.apply(*config_maps("1-25-2", "1.25.2", mesh={"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}))
    drift = revision_drift(kube, "default", ["1-25-2", "default"], "istio-system")["1-25-2 -> default"]
    assert drift == ['mesh.outboundTrafficPolicy.mode: "ALLOW_ANY" -> (unset)']
