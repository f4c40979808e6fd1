"""Injection and validation through the API, as clients see them (official kubernetes client).

Covers: a dead injector failing pod creation (FailedCreate on the ReplicaSet), the gateway
injection template, the default validator rejecting bad config, and a validator whose
service is gone breaking every Istio write (istio/istio#35590).
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from meshops.sandbox.istio.harness import MeshHarness

VERSION = "1.24.1"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MeshHarness(tmp_path_factory.mktemp("admission"), ["blue"],
                     {"istio": VERSION, "unrevisioned": True, "route53": False}) as m:
        m.cluster("blue").api.create(("", "namespaces"), {"metadata": {"name": "shop",
                                                                       "labels": {"istio-injection": "enabled"}}})
        yield m


@pytest.fixture(scope="module")
def api(mesh):
    return k8s_config.new_client_from_config(str(mesh.kubeconfig), context="blue")


def wait(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def deployment(name, labels=None, annotations=None, containers=None, replicas=1):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, **(labels or {})},
                                               "annotations": annotations or {}},
                                  "spec": {"containers": containers or [{"name": name, "image": "nginx:1.27"}]}}}}


def test_injected_pod_created_through_http(mesh, api):
    core = k8s.CoreV1Api(api)
    pod = core.create_namespaced_pod("shop", {"metadata": {"name": "naked", "labels": {"app": "naked"}},
                                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert [c.name for c in pod.spec.containers] == ["c", "istio-proxy"]
    assert pod.spec.containers[1].image == f"docker.io/istio/proxyv2:{VERSION}"
    assert json.loads(pod.metadata.annotations["sidecar.istio.io/status"])["revision"] == "default"
    assert pod.metadata.annotations["istio.io/rev"] == "default"
    assert "istio.io/rev" not in (pod.metadata.labels or {})


def test_gateway_template(mesh, api):
    apps = k8s.AppsV1Api(api)
    body = deployment("shop-gateway", labels={"istio": "shop-gateway", "sidecar.istio.io/inject": "true"},
                      annotations={"inject.istio.io/templates": "gateway"},
                      containers=[{"name": "istio-proxy", "image": "auto"}])
    apps.create_namespaced_deployment("shop", body)
    core = k8s.CoreV1Api(api)
    pods = wait(lambda: core.list_namespaced_pod("shop", label_selector="app=shop-gateway").items, what="gateway pod")
    (proxy,) = pods[0].spec.containers
    assert proxy.image == f"docker.io/istio/proxyv2:{VERSION}"
    assert "router" in proxy.args
    assert not pods[0].spec.init_containers


def test_dead_injector_fails_pod_creation(mesh, api):
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    apps.patch_namespaced_deployment_scale("istiod", "istio-system", {"spec": {"replicas": 0}})
    wait(lambda: not core.list_namespaced_pod("istio-system", label_selector="app=istiod").items, what="istiod gone")
    try:
        apps.create_namespaced_deployment("shop", deployment("cart"))
        def failed_sets():
            # Raw JSON: the typed model would also validate status fields this test is not about.
            raw = apps.list_namespaced_replica_set("shop", label_selector="app=cart", _preload_content=False)
            return [r for r in json.loads(raw.data)["items"]
                    if any(c["type"] == "ReplicaFailure" for c in r.get("status", {}).get("conditions") or [])]

        rs = wait(failed_sets, what="ReplicaFailure")
        (cond,) = [c for c in rs[0]["status"]["conditions"] if c["type"] == "ReplicaFailure"]
        assert cond["reason"] == "FailedCreate"
        expected = ('Internal error occurred: failed calling webhook "namespace.sidecar-injector.istio.io": failed to '
                    'call webhook: Post "https://istiod.istio-system.svc:443/inject?timeout=10s": no endpoints '
                    'available for service "istiod"')
        assert expected in cond["message"]
        events = core.list_namespaced_event("shop").items
        assert any(e.reason == "FailedCreate" and expected in e.message for e in events)
        assert not core.list_namespaced_pod("shop", label_selector="app=cart").items
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod("shop", {"metadata": {"name": "direct"},
                                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        assert err.value.status == 500 and json.loads(err.value.body)["reason"] == "InternalError"
        # Opted-out pods are not sent to the webhook at all, so they still start.
        core.create_namespaced_pod("shop", {"metadata": {"name": "opted-out", "labels": {"sidecar.istio.io/inject": "false"}},
                                            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    finally:
        apps.patch_namespaced_deployment_scale("istiod", "istio-system", {"spec": {"replicas": 1}})
    # The ReplicaSet retries with backoff and gets its pod once istiod is back.
    pods = wait(lambda: core.list_namespaced_pod("shop", label_selector="app=cart").items, timeout=30, what="cart pod")
    assert any(c.name == "istio-proxy" for c in pods[0].spec.containers)


def vs_body(name, weights, **extra_spec):
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"hosts": ["cart"], "http": [{"route": [
                {"destination": {"host": "cart", "subset": f"v{i}"}, "weight": w} for i, w in enumerate(weights)]}],
                **extra_spec}}


def create_vs(api, body):
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "networking.istio.io", "v1beta1", "shop", "virtualservices", body)


def test_validator_rejects_bad_config(mesh, api):
    assert create_vs(api, vs_body("good", [70, 30]))["metadata"]["name"] == "good"
    with pytest.raises(ApiException) as err:
        create_vs(api, vs_body("bad-weights", [70, 20]))
    assert err.value.status == 400
    msg = json.loads(err.value.body)["message"]
    assert msg.startswith('admission webhook "validation.istio.io" denied the request: configuration is invalid:')
    assert "total destination weight 90 != 100" in msg
    with pytest.raises(ApiException) as err:
        create_vs(api, vs_body("typo", [100], httpp=[]))
    assert 'unknown field "httpp" in spec' in json.loads(err.value.body)["message"]
    # Objects labelled for another revision are the business of that revision's validator only.
    labelled = vs_body("other-rev", [70, 20])
    labelled["metadata"]["labels"] = {"istio.io/rev": "nosuch"}
    assert create_vs(api, labelled)


def test_validator_with_missing_service_breaks_istio_writes(mesh, api):
    core = k8s.CoreV1Api(api)
    svc = core.read_namespaced_service("istiod", "istio-system")
    core.delete_namespaced_service("istiod", "istio-system")
    try:
        with pytest.raises(ApiException) as err:
            create_vs(api, vs_body("after-uninstall", [100]))
        body = json.loads(err.value.body)
        assert err.value.status == 500 and body["reason"] == "InternalError"
        assert ('failed calling webhook "validation.istio.io": failed to call webhook: Post '
                '"https://istiod.istio-system.svc:443/validate?timeout=10s": service "istiod" not found') in body["message"]
        # Non-Istio writes are untouched.
        core.create_namespaced_config_map("shop", {"metadata": {"name": "still-fine"}})
    finally:
        core.create_namespaced_service("istio-system", {"metadata": {"name": "istiod", "labels": svc.metadata.labels},
                                                        "spec": {"selector": svc.spec.selector,
                                                                 "ports": [{"name": p.name, "port": p.port,
                                                                            "targetPort": p.target_port}
                                                                           for p in svc.spec.ports]}})
    assert create_vs(api, vs_body("after-reinstall", [100]))
