"""Scheduler and kubelet: pods get a node, start, become Ready, terminate, complete.

A pod is bound and started in one write (Running, containers started, not Ready), becomes Ready
``rollout_seconds`` later if every readiness gate agrees, and leaves the store ``rollout_seconds``
after a graceful delete. Pods owned by Jobs (restartPolicy Never/OnFailure) run that long and
then succeed. Timing is by delayed re-queue, never by polling.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..jsonutil import age_seconds, clone, now_rfc3339
from ..kinds import NODES, PODS
from ..selectors import labels_match, requirements_from_label_selector
from ..store import StoreEvent
from .base import Controller
from .util import EventRecorder, Key, condition, pod_ready, set_condition

log = logging.getLogger("meshops.sandbox.kubelet")

Obj = dict[str, Any]


def node_status(node: Obj, index: int, k8s_version: str) -> Obj:
    now = now_rfc3339()

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {"type": kind, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": reason, "message": message}

    resources = {"cpu": "8", "memory": "32863084Ki", "pods": "110", "ephemeral-storage": "102626232Ki"}
    return {
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": f"172.18.0.{index + 1}"},
            {"type": "Hostname", "address": node["metadata"]["name"]},
        ],
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": f"{index:032x}",
            "systemUUID": f"{index:08x}-0000-0000-0000-000000000000",
            "bootID": f"{index:08x}-0000-0000-0000-000000000001",
            "kernelVersion": "6.1.0-sandbox",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": "containerd://1.7.18",
            "kubeletVersion": f"v{k8s_version}",
            "kubeProxyVersion": f"v{k8s_version}",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def image_id(image: str) -> str:
    """What containerd reports as `imageID`: the fully qualified repository plus the digest the
    image resolved to (`docker.io/istio/proxyv2@sha256:...`). A reference already pinned by digest
    keeps it; otherwise the digest is a stable sha256 of the reference (same image, same digest)."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    repo = ref.rsplit(":", 1)[0] if ":" in last else ref
    first = repo.split("/", 1)[0]
    if "/" not in repo:
        repo = f"docker.io/library/{repo}"
    elif "." not in first and ":" not in first and first != "localhost":
        repo = f"docker.io/{repo}"
    if not digest.startswith("sha256:"):
        digest = "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
    return f"{repo}@{digest}"


def _node_ready(node: Obj) -> bool:
    c = condition(node, "Ready")
    return bool(c and c.get("status") == "True") and not (node.get("spec") or {}).get("unschedulable")


def _fits(pod: Obj, node: Obj) -> bool:
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get(
        "nodeSelectorTerms"
    )
    if not terms:
        return True
    for term in terms:
        fields_ok = all(
            (f.get("operator") == "In" and node["metadata"]["name"] in (f.get("values") or []))
            or (f.get("operator") == "NotIn" and node["metadata"]["name"] not in (f.get("values") or []))
            for f in term.get("matchFields") or []
            if f.get("key") == "metadata.name"
        )
        exprs = requirements_from_label_selector({"matchExpressions": [e for e in term.get("matchExpressions") or [] if e.get("operator") in ("In", "NotIn", "Exists", "DoesNotExist")]}) or []
        if fields_ok and labels_match(labels, exprs):
            return True
    return False


def _is_job_pod(pod: Obj) -> bool:
    return (pod.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure")


class Kubelet(Controller):
    name = "kubelet"
    watches = (PODS, NODES)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "kubelet")
        self.scheduler_events = EventRecorder(cluster, "default-scheduler")
        self._round_robin = itertools.count()
        self._ip_counter: dict[str, itertools.count[int]] = {}
        self._unschedulable: set[Key] = set()
        # Monotonic clocks by pod uid: startTime has second precision, rollouts are sub-second.
        self._started: dict[str, float] = {}
        self._terminating: dict[str, float] = {}

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == NODES:
            # A node came or changed: it may need a status, and waiting pods may fit now.
            return [("node", event.name), *(("pod", *k) for k in self._unschedulable)]
        if event.type == "DELETED":
            return ()
        return [("pod", event.namespace, event.name)]

    def initial_keys(self) -> Iterable[Hashable]:
        pods, _ = self.store.list(PODS)
        nodes, _ = self.store.list(NODES)
        return [("node", n["metadata"]["name"]) for n in nodes] + [
            ("pod", p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods
        ]

    def sync(self, key: tuple[str, ...]) -> None:
        if key[0] == "node":
            self._sync_node(key[1])
        else:
            self._sync_pod(key[1], key[2])

    # ---- nodes -------------------------------------------------------------------------------

    def _sync_node(self, name: str) -> None:
        node = self.store.get(NODES, "", name)
        if node is None or condition(node, "Ready") is not None:
            return
        nodes, _ = self.store.list(NODES)
        index = next((i for i, n in enumerate(nodes) if n["metadata"]["name"] == name), 0) + 1
        self.api.update(NODES, {**node, "status": node_status(node, index, self.cluster.k8s_version)}, subresource="status")

    # ---- pods --------------------------------------------------------------------------------

    def _sync_pod(self, namespace: str, name: str) -> None:
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            self._unschedulable.discard((namespace, name))
            return
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        delay = self.cluster.rollout_seconds
        if meta.get("deletionTimestamp"):
            self._terminate(pod, delay)
            return
        if not spec.get("nodeName"):
            self._schedule(pod)
            return
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        if phase != "Running":
            self._start(pod)
            return
        if meta["uid"] in self._started:
            waited = self._started_ago(pod)
        else:  # started before this kubelet ran (or by someone else): trust startTime
            waited = age_seconds(status["startTime"]) if status.get("startTime") else delay
        if waited < delay:
            self.enqueue(("pod", namespace, name), delay - waited)
            return
        if _is_job_pod(pod):
            self._complete(pod)
            return
        self._set_ready(pod, self._gates_agree(pod))

    def _started_ago(self, pod: Obj) -> float:
        started = self._started.get(pod["metadata"]["uid"])
        return time.monotonic() - started if started is not None else 0.0

    def _schedule(self, pod: Obj) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        nodes, _ = self.store.list(NODES)
        candidates = [n for n in nodes if _node_ready(n) and _fits(pod, n)]
        if not candidates:
            self._unschedulable.add(key)
            status = clone(pod.get("status") or {})
            message = f"0/{len(nodes)} nodes are available: {len(nodes)} node(s) didn't match Pod's node affinity/selector."
            conditions = set_condition(status.get("conditions") or [], "PodScheduled", "False", "Unschedulable", message)
            if status.get("conditions") != conditions:
                status["conditions"] = conditions
                self.api.update(PODS, {**pod, "status": status}, namespace=meta["namespace"], subresource="status")
                self.scheduler_events.record(pod, "Warning", "FailedScheduling", message)
            return
        self._unschedulable.discard(key)
        node = candidates[next(self._round_robin) % len(candidates)]
        bound = clone(pod)
        bound["spec"]["nodeName"] = node["metadata"]["name"]
        self.api.update(PODS, bound, namespace=meta["namespace"], subresource="binding")
        self.scheduler_events.record(pod, "Normal", "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node['metadata']['name']}")

    def _pod_ip(self, node_name: str) -> str:
        node = self.store.get(NODES, "", node_name) or {}
        cidr = (node.get("spec") or {}).get("podCIDR") or "10.244.0.0/24"
        base = cidr.split("/")[0].split(".")
        counter = self._ip_counter.setdefault(node_name, itertools.count(2))
        n = next(counter)
        return f"{base[0]}.{base[1]}.{int(base[2]) + n // 250}.{n % 250 + 2}"

    def _start(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = self.store.get(NODES, "", spec["nodeName"]) or {}
        host_ip = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"), "172.18.0.2")
        pod_ip = host_ip if spec.get("hostNetwork") else self._pod_ip(spec["nodeName"])
        now = now_rfc3339()
        status = clone(pod.get("status") or {})
        conditions = status.get("conditions") or []
        for kind, value in (("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", "False"),
                            ("ContainersReady", "False"), ("PodScheduled", "True")):
            reason = "ContainersNotReady" if value == "False" else ""
            message = f"containers with unready status: [{' '.join(c['name'] for c in spec.get('containers') or [])}]" if value == "False" else ""
            conditions = set_condition(conditions, kind, value, reason, message)
        for c in conditions:
            if not c.get("reason"):
                c.pop("reason", None)
                c.pop("message", None)
        status.update({
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "containerStatuses": [self._container_status(c, now, ready=False) for c in spec.get("containers") or []],
        })
        if spec.get("initContainers"):
            # Sidecar containers (restartPolicy: Always, k8s 1.29+) keep running beside the app.
            status["initContainerStatuses"] = [
                self._container_status(c, now, ready=False) if c.get("restartPolicy") == "Always" else
                {**self._container_status(c, now, ready=False), "started": False,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}}
                for c in spec["initContainers"]
            ]
        self._started[meta["uid"]] = time.monotonic()
        self.api.update(PODS, {**pod, "status": status}, namespace=meta["namespace"], subresource="status")
        self.events.record(pod, "Normal", "Started", f"Started container {(spec.get('containers') or [{}])[0].get('name', '')}")
        self.enqueue(("pod", meta["namespace"], meta["name"]), self.cluster.rollout_seconds)

    @staticmethod
    def _container_status(container: Obj, now: str, *, ready: bool) -> Obj:
        image = container.get("image", "")
        name = container.get("name", "")
        return {
            "name": name,
            "image": image,
            "imageID": image_id(image),
            "containerID": f"containerd://{abs(hash((name, now))) % 16**16:064x}",
            "ready": ready,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
            "lastState": {},
        }

    def _gates_agree(self, pod: Obj) -> bool:
        for gate in list(self.cluster.readiness_gates):
            try:
                if not gate.pod_ready(pod, self.cluster):
                    return False
            except Exception as e:  # a broken gate keeps the pod unready rather than the kubelet down
                log.warning("readiness gate %r failed: %r", gate, e)
                return False
        for gate in (pod.get("spec") or {}).get("readinessGates") or []:
            c = condition(pod, gate.get("conditionType", ""))
            if not c or c.get("status") != "True":
                return False
        return True

    def _set_ready(self, pod: Obj, ready: bool) -> None:
        if pod_ready(pod) == ready and all(cs.get("ready") == ready for cs in (pod.get("status") or {}).get("containerStatuses") or []):
            return
        status = clone(pod.get("status") or {})
        conditions = status.get("conditions") or []
        if ready:
            for kind in ("ContainersReady", "Ready"):
                conditions = set_condition(conditions, kind, "True", "", "")
        else:
            names = " ".join(c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or [])
            for kind in ("ContainersReady", "Ready"):
                conditions = set_condition(conditions, kind, "False", "ContainersNotReady", f"containers with unready status: [{names}]")
        for c in conditions:
            if c.get("reason") == "":
                c.pop("reason", None)
                c.pop("message", None)
        status["conditions"] = conditions
        for cs in status.get("containerStatuses") or []:
            cs["ready"] = ready
        sidecars = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []
                    if c.get("restartPolicy") == "Always"}
        for cs in status.get("initContainerStatuses") or []:
            if cs.get("name") in sidecars:
                cs["ready"] = ready
        meta = pod["metadata"]
        self.api.update(PODS, {**pod, "status": status}, namespace=meta["namespace"], subresource="status")

    def _complete(self, pod: Obj) -> None:
        now = now_rfc3339()
        status = clone(pod.get("status") or {})
        status["phase"] = "Succeeded"
        conditions = status.get("conditions") or []
        for kind in ("Ready", "ContainersReady"):
            conditions = set_condition(conditions, kind, "False", "PodCompleted", "")
        status["conditions"] = conditions
        for cs in status.get("containerStatuses") or []:
            started = ((cs.get("state") or {}).get("running") or {}).get("startedAt", now)
            cs.update({"ready": False, "started": False,
                       "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now}}})
        meta = pod["metadata"]
        self._started.pop(meta["uid"], None)
        self.api.update(PODS, {**pod, "status": status}, namespace=meta["namespace"], subresource="status")

    def _terminate(self, pod: Obj, delay: float) -> None:
        meta = pod["metadata"]
        key = ("pod", meta["namespace"], meta["name"])
        grace = meta.get("deletionGracePeriodSeconds")
        if grace and (pod.get("spec") or {}).get("nodeName"):
            # Containers stop within the grace period, scaled like everything else.
            stop_after = min(float(grace), delay)
            since = self._terminating.setdefault(meta["uid"], time.monotonic())
            remaining = stop_after - (time.monotonic() - since)
            if remaining > 0:
                self.enqueue(key, remaining)
                return
        self._terminating.pop(meta["uid"], None)
        self._started.pop(meta["uid"], None)
        try:
            self.api.delete(PODS, meta["namespace"], meta["name"], {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiError as e:
            if e.code not in (404, 409):
                raise
