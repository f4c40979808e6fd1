"""Real kubectl (1.33 from the machine image, Debian's 1.20) against the in-process sandbox."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshops.sandbox.apiserver import Cluster

Kubectl = Any  # conftest.Kubectl: kubectl(*args, check=True) -> CompletedProcess

APP_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: api:1
        env: [{name: A, value: "1"}, {name: B, value: "b"}]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  type: LoadBalancer
  selector: {app: api}
  ports: [{port: 80, targetPort: 8080}]
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def wait_rolled_out(kubectl: Kubectl, name: str) -> str:
    return kubectl("rollout", "status", f"deployment/{name}", "--timeout=30s").stdout


def test_get_and_describe(kubectl: Kubectl) -> None:
    """get prints server-side tables (nodes, namespaces) and describe finds objects and their events."""
    nodes = kubectl("get", "nodes").stdout.splitlines()
    assert nodes[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [line.split()[:2] for line in nodes[1:]] == [[f"test-node-{i}", "Ready"] for i in (1, 2, 3)]
    assert "kube-system" in kubectl("get", "ns").stdout
    kubectl("create", "deployment", "web", "--image=nginx:1.25", "--replicas=2")
    wait_rolled_out(kubectl, "web")
    pods = kubectl("get", "pods", "-l", "app=web", "-o", "wide").stdout.splitlines()
    assert pods[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all(line.split()[1:3] == ["1/1", "Running"] for line in pods[1:]) and len(pods) == 3
    described = kubectl("describe", "deployment", "web").stdout
    assert "Replicas:               2 desired | 2 updated | 2 total | 2 available | 0 unavailable" in described
    assert "ScalingReplicaSet" in described
    pod_name = pods[1].split()[0]
    assert "Successfully assigned default/" in kubectl("describe", "pod", pod_name).stdout
    assert kubectl("logs", pod_name).stdout == ""  # simulated containers write nothing
    assert kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"


def test_create_label_annotate(kubectl: Kubectl) -> None:
    """Imperative create (protobuf bodies), label and annotate (merge patches) round-trip."""
    kubectl("create", "namespace", "team")
    kubectl("create", "configmap", "settings", "-n", "team", "--from-literal=a=1")
    kubectl("create", "secret", "generic", "token", "-n", "team", "--from-literal=t=s3cret")
    kubectl("create", "service", "clusterip", "db", "-n", "team", "--tcp=5432:5432")
    kubectl("label", "configmap", "settings", "-n", "team", "tier=backend")
    kubectl("annotate", "configmap", "settings", "-n", "team", "owner=me")
    cm = get_json(kubectl, "configmap", "settings", "-n", "team")
    assert cm["data"] == {"a": "1"} and cm["metadata"]["labels"] == {"tier": "backend"}
    assert cm["metadata"]["annotations"] == {"owner": "me"}
    assert get_json(kubectl, "secret", "token", "-n", "team")["data"] == {"t": "czNjcmV0"}
    assert get_json(kubectl, "service", "db", "-n", "team")["spec"]["clusterIP"].startswith("10.96.")
    kubectl("label", "configmap", "settings", "-n", "team", "tier-")
    assert "labels" not in get_json(kubectl, "configmap", "settings", "-n", "team")["metadata"]
    assert kubectl("get", "cm", "-n", "team", "-l", "tier=backend", "-o", "name").stdout == ""


def test_apply_client_side(kubectl: Kubectl, tmp_path: Path) -> None:
    """Client-side apply creates, then patches with a strategic merge computed from OpenAPI."""
    first = write(tmp_path, "app.yaml", APP_YAML)
    out = kubectl("apply", "-f", first).stdout
    assert "deployment.apps/api created" in out and "service/api created" in out
    changed = APP_YAML.replace("api:1", "api:2").replace('{name: B, value: "b"}', '{name: C, value: "c"}')
    out = kubectl("apply", "-f", write(tmp_path, "app2.yaml", changed)).stdout
    assert "deployment.apps/api configured" in out and "service/api unchanged" in out
    d = get_json(kubectl, "deployment", "api")
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "api:2"
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "c"}]
    assert "kubectl.kubernetes.io/last-applied-configuration" in d["metadata"]["annotations"]
    wait_rolled_out(kubectl, "api")
    bad = kubectl("apply", "-f", write(tmp_path, "bad.yaml", APP_YAML.replace("replicas: 2", "replicas: 2\n  bogus: 1")), check=False)
    assert bad.returncode != 0 and "bogus" in bad.stderr


def test_apply_server_side(kubectl: Kubectl, tmp_path: Path) -> None:
    """Server-side apply creates and updates with managedFields, and honours --dry-run=server."""
    path = write(tmp_path, "app.yaml", APP_YAML)
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", path).stdout
    changed = write(tmp_path, "app2.yaml", APP_YAML.replace("replicas: 2", "replicas: 3"))
    assert "(server dry run)" in kubectl("apply", "--server-side", "--dry-run=server", "-f", changed).stdout
    assert get_json(kubectl, "deployment", "api")["spec"]["replicas"] == 2
    kubectl("apply", "--server-side", "-f", changed)
    shown = [] if kubectl.version == "1.20" else ["--show-managed-fields"]  # 1.20 always shows them
    d = get_json(kubectl, "deployment", "api", *shown)
    assert d["spec"]["replicas"] == 3
    assert any(m["manager"] == "kubectl" and m["operation"] == "Apply" for m in d["metadata"]["managedFields"])


def test_scale_and_rollout_restart(kubectl: Kubectl) -> None:
    """scale goes through /scale; rollout restart makes a new revision that rollout status follows."""
    kubectl("create", "deployment", "web", "--image=nginx:1.25")
    wait_rolled_out(kubectl, "web")
    kubectl("scale", "deployment", "web", "--replicas=4")
    assert "successfully rolled out" in wait_rolled_out(kubectl, "web")
    assert get_json(kubectl, "deployment", "web")["status"]["availableReplicas"] == 4
    kubectl("rollout", "restart", "deployment/web")
    assert 'deployment "web" successfully rolled out' in wait_rolled_out(kubectl, "web")
    d = get_json(kubectl, "deployment", "web")
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"]["annotations"]
    history = kubectl("rollout", "history", "deployment/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    replicasets = get_json(kubectl, "rs", "-l", "app=web")["items"]
    assert sorted(rs["spec"]["replicas"] for rs in replicasets) == [0, 4]


def test_get_watch_with_request_timeout(kubectl: Kubectl, cluster: Cluster) -> None:
    """get -w prints the current objects, then changes, and returns when --request-timeout ends the watch."""
    import threading

    kubectl("create", "configmap", "first")

    def later() -> None:
        time.sleep(0.8)
        cluster.api.create(("", "configmaps"), {"metadata": {"name": "second"}}, namespace="default")

    thread = threading.Thread(target=later)
    thread.start()
    start = time.monotonic()
    result = kubectl("get", "configmaps", "-w", "--request-timeout=3s", check=False, timeout=20)
    thread.join()
    assert time.monotonic() - start < 10
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip() and not line.startswith("NAME")]
    assert "first" in names and "second" in names
    assert names.index("first") < names.index("second")


@pytest.mark.parametrize("cascade", ["background", "foreground", "orphan"])
def test_delete_with_cascade(kubectl: Kubectl, cascade: str) -> None:
    """delete --cascade removes or orphans the ReplicaSets and pods of a Deployment."""
    kubectl("create", "deployment", "web", "--image=nginx:1.25", "--replicas=2")
    wait_rolled_out(kubectl, "web")
    flag = {"background": "--cascade=true", "foreground": "--cascade=true", "orphan": "--cascade=false"}[cascade]
    if kubectl.version != "1.20":
        flag = f"--cascade={cascade}"
    kubectl("delete", "deployment", "web", flag, "--wait=true", "--timeout=30s")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rs = get_json(kubectl, "rs", "-l", "app=web")["items"]
        pods = [p for p in get_json(kubectl, "pods", "-l", "app=web")["items"] if not p["metadata"].get("deletionTimestamp")]
        if cascade == "orphan" or (not rs and not pods):
            break
        time.sleep(0.05)
    if cascade == "orphan":
        assert len(rs) == 1 and not rs[0]["metadata"].get("ownerReferences") and len(pods) == 2
    else:
        assert not rs and not pods


def test_explain(kubectl: Kubectl) -> None:
    """explain reads field documentation from the OpenAPI the server publishes."""
    out = kubectl("explain", "deployment.spec.replicas").stdout
    assert "Deployment" in out and "replicas" in out and "integer" in out
    assert "Number of desired pods" in out


def test_custom_resources(kubectl: Kubectl, tmp_path: Path) -> None:
    """A CRD applied with kubectl serves its kind: create, get with printer columns, patch, delete."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]},
    }
    kubectl("apply", "-f", write(tmp_path, "crd.yaml", yaml.safe_dump(crd)))
    kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s")
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    kubectl("apply", "-f", write(tmp_path, "w.yaml", yaml.safe_dump(widget)))
    table = kubectl("get", "wd").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "AGE"] and table[1].split()[:2] == ["w1", "3"]
    kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":5}}')
    assert get_json(kubectl, "widget", "w1")["spec"]["size"] == 5
    kubectl("delete", "crd", "widgets.example.com")


def test_preserve_unknown_fields_custom_resource(kubectl: Kubectl, tmp_path: Path) -> None:
    """A namespaced CR whose CRD schema is only x-kubernetes-preserve-unknown-fields: kubectl 1.20
    validates on the client from OpenAPI v2 and must not call `spec` an unknown field."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    kubectl("apply", "-f", write(tmp_path, "crd.yaml", yaml.safe_dump(crd)))
    kubectl("wait", "--for=condition=Established", "crd/gadgets.example.com", "--timeout=10s")
    gadget = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1", "namespace": "default"},
              "spec": {"anything": {"nested": [1, 2]}}}
    kubectl("create", "-f", write(tmp_path, "g.yaml", yaml.safe_dump(gadget)))
    kubectl("apply", "-f", write(tmp_path, "g2.yaml", yaml.safe_dump({**gadget, "metadata": {"name": "g2"}})))
    assert get_json(kubectl, "gadget", "g1")["spec"] == {"anything": {"nested": [1, 2]}}


def test_other_kubectl_versions_apply_and_rollout(kubectl_for: Any, manifest: Any, tmp_path: Path) -> None:
    """kubectl 1.27 to 1.32 also apply, roll out and read back from the sandbox."""
    path = write(tmp_path, "d.yaml", yaml.safe_dump(manifest("multi", replicas=1)))
    for version in ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32"):
        kubectl = kubectl_for(version)
        kubectl("apply", "-f", path)
        kubectl("set", "image", "deployment/multi", f"app=app:{version}")  # a strategic merge patch
        assert "successfully rolled out" in wait_rolled_out(kubectl, "multi")
    final = get_json(kubectl, "deployment", "multi")
    assert final["spec"]["template"]["spec"]["containers"][0]["image"] == "app:1.32"
    assert final["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "12"  # apply and set image, 6 times


@pytest.mark.parametrize("version", ["1.33", "1.20"])
def test_token_over_tls_required(version: str, tmp_path: Path) -> None:
    """As `sandbox up` runs it: HTTPS with the CA in the kubeconfig, and the bearer token it wrote
    there required (kubectl sends tokens only over TLS); a wrong token gets 401."""
    from meshops.sandbox.runtime import new_token, write_kubeconfig
    from tests.sandbox.conftest import make_kubectl

    with Cluster("tls", token=new_token(), tls_dir=tmp_path / "pki") as c:
        assert c.url.startswith("https://") and c.serving is not None
        good, bad = tmp_path / "good", tmp_path / "bad"
        write_kubeconfig(good, {"tls": c.url}, token=c.token, ca={"tls": c.serving.ca_pem})
        write_kubeconfig(bad, {"tls": c.url}, token=new_token(), ca={"tls": c.serving.ca_pem})
        assert "kube-system" in make_kubectl(version, good, tmp_path / "h1")("get", "ns").stdout
        refused = make_kubectl(version, bad, tmp_path / "h2")("get", "ns", check=False)
        assert refused.returncode != 0
        assert "Unauthorized" in refused.stderr or "provide credentials" in refused.stderr
