"""Scenario definitions: what each named scenario deploys, and FILE scenarios."""

from __future__ import annotations

import pytest

from meshops.sandbox import scenarios
from meshops.sandbox.istio import validation


def kinds(objs):
    return sorted({o["kind"] for o in objs})


def test_named_scenarios_exist():
    assert {"default", "revisioned", "blue-green", "fleet-200"} <= set(scenarios.names())


def test_default_has_the_shapes_an_upgrade_meets():
    sc = scenarios.load("default")
    assert sc.clusters == ["blue"] and sc.revision == "" and sc.injection == "legacy"
    plain, istio = scenarios.objects(sc)
    assert {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod", "Service", "Namespace"} <= set(kinds(plain))
    namespaces = {o["metadata"]["name"]: o["metadata"].get("labels") for o in plain if o["kind"] == "Namespace"}
    assert len([n for n, lbl in namespaces.items() if lbl == {"istio-injection": "enabled"}]) >= 3
    assert namespaces["legacy-batch"] == {"istio-injection": "disabled"}
    opted_out = [o for o in plain if o["kind"] == "Deployment"
                 and o["spec"]["template"]["metadata"]["labels"].get("sidecar.istio.io/inject") == "false"]
    assert opted_out
    assert plain[0]["kind"] == "Namespace"
    assert kinds(istio) == ["DestinationRule", "Gateway", "PeerAuthentication", "VirtualService"]
    pa = next(o for o in istio if o["kind"] == "PeerAuthentication")
    assert pa["spec"]["mtls"]["mode"] == "STRICT"
    dr = next(o for o in istio if o["kind"] == "DestinationRule")
    assert dr["spec"]["trafficPolicy"]["outlierDetection"]
    weighted = next(o for o in istio if o["kind"] == "VirtualService" and o["metadata"]["name"] == "reviews")
    assert sum(r["weight"] for r in weighted["spec"]["http"][0]["route"]) == 100
    # The bundled config passes the sandbox's own validating webhook.
    for obj in istio:
        assert validation.validate(obj["kind"], obj) == [], obj["metadata"]["name"]


def test_revisioned_uses_tag_labels():
    sc = scenarios.load("revisioned")
    assert sc.revision_for("1.24.1") == "1-24-1" and sc.tags == ["prod-stable"]
    plain, _ = scenarios.objects(sc)
    labels = [o["metadata"]["labels"] for o in plain if o["kind"] == "Namespace"]
    assert {"istio.io/rev": "prod-stable"} in labels and {"istio-injection": "enabled"} not in labels


def test_blue_green_and_fleet():
    bg = scenarios.load("blue-green")
    assert bg.clusters == ["blue", "green"] and bg.route53_cluster == "blue"
    fleet = scenarios.load("fleet-200")
    plain, istio = scenarios.objects(fleet)
    assert sum(o["kind"] == "Namespace" for o in plain) == 200
    assert sum(o["kind"] == "Deployment" for o in plain) == 2000
    assert istio == []


def test_file_scenario(tmp_path):
    f = tmp_path / "extra.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n---\n"
                 "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: extra}\n"
                 "spec: {selector: {istio: ingressgateway}, servers: []}\n")
    sc = scenarios.load(str(f))
    plain, istio = scenarios.objects(sc)
    assert [o["metadata"]["name"] for o in plain] == ["extra"]
    assert [o["kind"] for o in istio] == ["Gateway"]
    with pytest.raises(scenarios.ScenarioError):
        scenarios.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a map\n")
    with pytest.raises(scenarios.ScenarioError, match="kind"):
        scenarios.load(str(bad))
