"""API faults as HTTP clients meet them: errors, Retry-After, conflicts, latency, watch cuts, audit."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from meshops.sandbox import faults
from meshops.sandbox.istio.harness import MeshHarness


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MeshHarness(tmp_path_factory.mktemp("faults"), ["blue", "green"],
                     {"istio": "1.26.3", "route53": False, "fault_seed": 5}) as m:
        yield m


@pytest.fixture(scope="module")
def core(mesh):
    return k8s.CoreV1Api(k8s_config.new_client_from_config(str(mesh.kubeconfig), context="blue"))


@pytest.fixture
def fault(mesh):
    url = mesh.sandbox.env["MESHOPS_SANDBOX_FAULTS_URL"]
    yield lambda cluster, *specs: faults.send(url, cluster, list(specs))
    faults.clear(url)


def audit(mesh, cluster="blue"):
    return [json.loads(line) for line in (mesh.dir / f"audit-{cluster}.jsonl").read_text().splitlines()]


def test_500s_and_the_audit_log(mesh, core, fault):
    (added,) = fault("blue", "api-error:code=500,resource=configmaps")
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default")
    assert err.value.status == 500 and json.loads(err.value.body)["reason"] == "InternalError"
    core.list_namespace()  # other resources unaffected
    entries = audit(mesh)
    marker = next(e for e in entries if e["verb"] == "fault-added" and e["name"] == str(added["id"]))
    assert marker["query"] == "api-error:code=500,resource=configmaps"
    later = entries[entries.index(marker):]
    assert any(e["resource"] == "configmaps" and e["verb"] == "list" and e["status"] == 500 for e in later)
    assert all(e["verb"] != "fault-added" for e in audit(mesh, "green") if e["name"] == str(added["id"]))


def test_429_carries_retry_after(mesh, fault):
    fault("blue", "api-error:code=429,retry-after=2")
    c = mesh.cluster("blue")
    request = urllib.request.Request(c.url + "/api/v1/namespaces", headers={"Authorization": f"Bearer {c.token}"})
    ca = ssl.create_default_context(cafile=str(c.serving.ca_file))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5, context=ca)
    assert err.value.code == 429
    assert err.value.headers["Retry-After"] == "2"
    body = json.loads(err.value.read())
    assert body["reason"] == "TooManyRequests" and body["details"]["retryAfterSeconds"] == 2


def test_istioctl_waits_out_throttling(mesh, fault):
    fault("blue", "api-error:code=429,rate=0.8,retry-after=0")
    result = mesh.istioctl("1.26.3", "version", "--context", "blue")
    assert result.returncode == 0, result.stderr
    assert "control plane version: 1.26.3" in result.stdout
    throttled = [e for e in audit(mesh) if e["status"] == 429 and e["user_agent"] == "istioctl/sandbox"]
    assert throttled  # it met 429s and retried past them


def test_conflicts_only_on_writes(core, fault):
    fault("blue", "api-error:code=409")
    core.list_namespaced_config_map("default")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    body = json.loads(err.value.body)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]


def test_latency(core, fault):
    t0 = time.monotonic()
    core.list_namespace()
    fast = time.monotonic() - t0
    fault("blue", "api-latency:ms=300")
    t0 = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - t0 >= 0.3 > fast


def test_watch_cut_after_n_events(core, fault):
    for i in range(6):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"w{i}", "labels": {"watch": "cut"}}})
    fault("blue", "watch-cut:after=3")
    t0 = time.monotonic()
    events = list(k8s_watch.Watch().stream(core.list_namespaced_config_map, "default", label_selector="watch=cut",
                                           timeout_seconds=10))
    assert len(events) == 3
    assert time.monotonic() - t0 < 5  # ended by the cut, not by the timeout


def test_node_not_ready(mesh, core, fault):
    node = "blue-node-1"
    fault("blue", f"node-not-ready:node={node}")
    conds = {c.type: c for c in core.read_node(node).status.conditions}
    assert conds["Ready"].status == "Unknown" and conds["Ready"].reason == "NodeStatusUnknown"

    def ready_on_node():
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
        return [next(c.status for c in p.status.conditions if c.type == "Ready") for p in pods]

    deadline = time.monotonic() + 10
    while "True" in ready_on_node() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready_on_node() and "True" not in ready_on_node()
    faults.clear(mesh.sandbox.env["MESHOPS_SANDBOX_FAULTS_URL"], "blue")
    assert {c.type: c.status for c in core.read_node(node).status.conditions}["Ready"] == "True"
    deadline = time.monotonic() + 10
    while "True" not in ready_on_node() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(ready_on_node()) == {"True"}
