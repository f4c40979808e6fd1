"""Defaulting, as the API server applies it when it decodes an object.

Only defaults that clients read back or controllers depend on are filled in: strategies, replica
counts, pod-template fields that ``kubectl apply`` would otherwise diff against, Service
ClusterIPs and NodePorts. Defaulting is idempotent, so it runs again after mutating admission
(kube re-decodes webhook-mutated objects the same way).
"""

from __future__ import annotations

import ipaddress
import random
import threading
import uuid
from typing import Any

from .jsonutil import meta

Obj = dict[str, Any]

DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]


class Allocator:
    """ClusterIPs from 10.96.0.0/12 and NodePorts from 30000-32767, never handed out twice."""

    def __init__(self, service_cidr: str = "10.96.0.0/12") -> None:
        self._lock = threading.Lock()
        self._network = ipaddress.ip_network(service_cidr)
        self._next_ip = 10  # .1 is the kubernetes Service, a few more kept free like kube does
        self._used_ips: set[str] = set()
        self._next_port = 30000
        self._used_ports: set[int] = set()

    def cluster_ip(self) -> str:
        with self._lock:
            while True:
                ip = str(self._network.network_address + self._next_ip)
                self._next_ip += 1
                if ip not in self._used_ips:
                    self._used_ips.add(ip)
                    return ip

    def reserve_ip(self, ip: str) -> None:
        with self._lock:
            self._used_ips.add(ip)

    def node_port(self) -> int:
        with self._lock:
            while self._next_port in self._used_ports:
                self._next_port += 1
            port = self._next_port
            self._used_ports.add(port)
            self._next_port = 30000 + (self._next_port - 30000 + 1) % 2768
            return port

    def reserve_port(self, port: int) -> None:
        with self._lock:
            self._used_ports.add(port)


def new_uid() -> str:
    # A version-4 UUID from the fast PRNG: unique enough for a sandbox, 3x cheaper than urandom.
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _container(c: Obj) -> None:
    if not isinstance(c, dict):
        return
    image = str(c.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c:
        latest = ":" not in tag or tag.endswith(":latest")
        c["imagePullPolicy"] = "Always" if latest and "@" not in tag else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            p.setdefault("timeoutSeconds", 1)
            p.setdefault("periodSeconds", 10)
            p.setdefault("successThreshold", 1)
            p.setdefault("failureThreshold", 3)


def pod_spec(spec: Obj) -> None:
    if not isinstance(spec, dict):
        return
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            _container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def _template(obj: Obj, *path: str) -> None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        meta(node)
        if "creationTimestamp" in node["metadata"] and node["metadata"]["creationTimestamp"] is None:
            del node["metadata"]["creationTimestamp"]
        pod_spec(node.setdefault("spec", {}))


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


def apply_defaults(kind: str, obj: Obj, allocator: Allocator) -> None:
    """Fill server defaults into ``obj`` in place (it is a private copy)."""
    fn = _DEFAULTERS.get(kind)
    if fn is not None:
        fn(obj, allocator)


def _deployment(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            if isinstance(ru, dict):
                ru.setdefault("maxSurge", "25%")
                ru.setdefault("maxUnavailable", "25%")
    _template(obj, "spec", "template")


def _replicaset(obj: Obj, _: Allocator) -> None:
    _spec(obj).setdefault("replicas", 1)
    _template(obj, "spec", "template")


def _rolling_update(spec: Obj, **defaults: Any) -> None:
    """StatefulSet and DaemonSet ``updateStrategy``: RollingUpdate unless set, with its defaults."""
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = strategy.setdefault("rollingUpdate", {})
            if isinstance(ru, dict):
                for key, value in defaults.items():
                    ru.setdefault(key, value)


def _statefulset(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    _rolling_update(spec, partition=0)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )
    _template(obj, "spec", "template")


def _daemonset(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("revisionHistoryLimit", 10)
    _rolling_update(spec, maxUnavailable=1, maxSurge=0)
    _template(obj, "spec", "template")


def _job(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    uid = meta(obj).get("uid")
    template = spec.get("template")
    if uid and isinstance(template, dict) and not spec.get("manualSelector"):
        # The Job controller's selector: pods carry the job's uid (kube's generated selector).
        labels = meta(template).setdefault("labels", {})
        if isinstance(labels, dict):
            labels.setdefault("batch.kubernetes.io/controller-uid", uid)
            labels.setdefault("controller-uid", uid)
            labels.setdefault("batch.kubernetes.io/job-name", meta(obj).get("name", ""))
            labels.setdefault("job-name", meta(obj).get("name", ""))
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    _template(obj, "spec", "template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        template["spec"]["restartPolicy"] = template["spec"].get("restartPolicy") or "Never"


def _cronjob(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    _template(obj, "spec", "jobTemplate", "spec", "template")


def _pod(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    pod_spec(spec)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if "tolerations" not in spec:
        spec["tolerations"] = [dict(t) for t in DEFAULT_TOLERATIONS]


def _service(obj: Obj, allocator: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    svc_type = spec["type"]
    for port in spec.get("ports") or []:
        if not isinstance(port, dict):
            continue
        port.setdefault("protocol", "TCP")
        if "targetPort" not in port and "port" in port:
            port["targetPort"] = port["port"]
        if svc_type in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
            port["nodePort"] = allocator.node_port()
    if svc_type != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocator.cluster_ip()
        elif spec["clusterIP"] != "None":
            allocator.reserve_ip(spec["clusterIP"])
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if svc_type in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if svc_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _namespace(obj: Obj, _: Allocator) -> None:
    spec = _spec(obj)
    spec.setdefault("finalizers", ["kubernetes"])
    labels = meta(obj).setdefault("labels", {})
    if isinstance(labels, dict):
        labels["kubernetes.io/metadata.name"] = meta(obj).get("name", "")


def _secret(obj: Obj, _: Allocator) -> None:
    import base64

    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _pdb(obj: Obj, _: Allocator) -> None:
    _spec(obj)


_DEFAULTERS = {
    "Deployment": _deployment,
    "ReplicaSet": _replicaset,
    "StatefulSet": _statefulset,
    "DaemonSet": _daemonset,
    "Job": _job,
    "CronJob": _cronjob,
    "Pod": _pod,
    "Service": _service,
    "Namespace": _namespace,
    "Secret": _secret,
    "PodDisruptionBudget": _pdb,
}


def initial_status(kind: str, obj: Obj) -> Obj | None:
    """The status a built-in kind starts with (kube resets client-sent status on create)."""
    if kind == "CustomResourceDefinition":
        versions = (obj.get("spec") or {}).get("versions") or []
        stored = [v.get("name") for v in versions if isinstance(v, dict) and v.get("storage")]
        return {"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": stored}
    if kind == "Pod":
        return {"phase": "Pending", "qosClass": "BestEffort"}
    if kind == "Namespace":
        return {"phase": "Active"}
    if kind == "Service":
        return {"loadBalancer": {}}
    # The fields kube's types do not omit when zero (clients' models require them).
    if kind in ("ReplicaSet", "StatefulSet"):
        return {"replicas": 0, "availableReplicas": 0} if kind == "StatefulSet" else {"replicas": 0}
    if kind == "DaemonSet":
        return {"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0}
    if kind == "PodDisruptionBudget":
        return {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}
    if kind in ("Deployment", "Job", "CronJob"):
        return {}
    return None
