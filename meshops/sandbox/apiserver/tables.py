"""Server-side printing: ``meta.k8s.io/v1`` Tables, the columns ``kubectl get`` shows.

kubectl asks for a Table on get, list and watch and prints its cells as they are; the columns
and cell formats follow kube's ``pkg/printers/internalversion`` for the kinds the sandbox
serves, and a CRD's ``additionalPrinterColumns`` for custom resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .jsonutil import age_seconds, dumps
from .kinds import ResourceType
from .selectors import selector_to_string
from .store import StoredVersion

Obj = dict[str, Any]
Column = tuple[str, str, int, Callable[[Obj], Any]]  # (name, type, priority, cell)


def human_duration(seconds: float) -> str:
    """kube's ``duration.HumanDuration``: 45s, 3m12s, 25m, 5h3m, 18h, 3d4h, 45d, 2y100d."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if years < 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _age(obj: Obj) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    return human_duration(age_seconds(ts)) if ts else "<unknown>"


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def _containers(obj: Obj, *template: str) -> list[Obj]:
    spec = _get(obj, *template, "spec") or {}
    return list(spec.get("containers") or [])


def _names(obj: Obj, *template: str) -> str:
    return ",".join(c.get("name", "") for c in _containers(obj, *template))


def _images(obj: Obj, *template: str) -> str:
    return ",".join(c.get("image", "") for c in _containers(obj, *template))


def _pod_status(pod: Obj) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _pod_ready(pod: Obj) -> str:
    statuses = _get(pod, "status", "containerStatuses", default=[])
    total = len(_get(pod, "spec", "containers", default=[]))
    ready = sum(1 for cs in statuses if cs.get("ready"))
    return f"{ready}/{total}"


def _service_ports(svc: Obj) -> str:
    parts = []
    for p in _get(svc, "spec", "ports", default=[]):
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        parts.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return str(spec.get("externalName", "<none>"))
    ingress = _get(svc, "status", "loadBalancer", "ingress", default=[])
    names = [i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")]
    if names:
        return ",".join(names)
    if spec.get("externalIPs"):
        return ",".join(spec["externalIPs"])
    return "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"


def _node_status(node: Obj) -> str:
    ready = next((c for c in _get(node, "status", "conditions", default=[]) if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if _get(node, "spec", "unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(node: Obj) -> str:
    labels = _get(node, "metadata", "labels", default={})
    roles = [k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")]
    return ",".join(sorted(roles)) or "<none>"


def _endpoints(ep: Obj) -> str:
    out = []
    for subset in ep.get("subsets") or []:
        ports = subset.get("ports") or [{}]
        for address in subset.get("addresses") or []:
            for port in ports:
                out.append(f"{address.get('ip')}:{port.get('port')}" if port.get("port") else str(address.get("ip")))
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


def _job_status(job: Obj) -> str:
    for condition in _get(job, "status", "conditions", default=[]):
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed", "Suspended"):
            return str(condition["type"])
    return "Running"


_NAME: Column = ("Name", "string", 0, lambda o: _get(o, "metadata", "name", default=""))
_AGE: Column = ("Age", "string", 0, _age)

_COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        _NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda o: str(sum(cs.get("restartCount", 0) for cs in _get(o, "status", "containerStatuses", default=[])))),
        _AGE,
        ("IP", "string", 1, lambda o: _get(o, "status", "podIP", default="<none>")),
        ("Node", "string", 1, lambda o: _get(o, "spec", "nodeName", default="<none>")),
        ("Nominated Node", "string", 1, lambda o: _get(o, "status", "nominatedNodeName", default="<none>")),
        ("Readiness Gates", "string", 1, lambda o: "<none>"),
    ],
    "Deployment": [
        _NAME,
        ("Ready", "string", 0, lambda o: f"{_get(o, 'status', 'readyReplicas', default=0)}/{_get(o, 'spec', 'replicas', default=0)}"),
        ("Up-to-date", "integer", 0, lambda o: _get(o, "status", "updatedReplicas", default=0)),
        ("Available", "integer", 0, lambda o: _get(o, "status", "availableReplicas", default=0)),
        _AGE,
        ("Containers", "string", 1, lambda o: _names(o, "spec", "template")),
        ("Images", "string", 1, lambda o: _images(o, "spec", "template")),
        ("Selector", "string", 1, lambda o: selector_to_string(_get(o, "spec", "selector"))),
    ],
    "ReplicaSet": [
        _NAME,
        ("Desired", "integer", 0, lambda o: _get(o, "spec", "replicas", default=0)),
        ("Current", "integer", 0, lambda o: _get(o, "status", "replicas", default=0)),
        ("Ready", "integer", 0, lambda o: _get(o, "status", "readyReplicas", default=0)),
        _AGE,
        ("Containers", "string", 1, lambda o: _names(o, "spec", "template")),
        ("Images", "string", 1, lambda o: _images(o, "spec", "template")),
        ("Selector", "string", 1, lambda o: selector_to_string(_get(o, "spec", "selector"))),
    ],
    "StatefulSet": [
        _NAME,
        ("Ready", "string", 0, lambda o: f"{_get(o, 'status', 'readyReplicas', default=0)}/{_get(o, 'spec', 'replicas', default=0)}"),
        _AGE,
        ("Containers", "string", 1, lambda o: _names(o, "spec", "template")),
        ("Images", "string", 1, lambda o: _images(o, "spec", "template")),
    ],
    "DaemonSet": [
        _NAME,
        ("Desired", "integer", 0, lambda o: _get(o, "status", "desiredNumberScheduled", default=0)),
        ("Current", "integer", 0, lambda o: _get(o, "status", "currentNumberScheduled", default=0)),
        ("Ready", "integer", 0, lambda o: _get(o, "status", "numberReady", default=0)),
        ("Up-to-date", "integer", 0, lambda o: _get(o, "status", "updatedNumberScheduled", default=0)),
        ("Available", "integer", 0, lambda o: _get(o, "status", "numberAvailable", default=0)),
        ("Node Selector", "string", 0, lambda o: ",".join(f"{k}={v}" for k, v in _get(o, "spec", "template", "spec", "nodeSelector", default={}).items()) or "<none>"),
        _AGE,
        ("Containers", "string", 1, lambda o: _names(o, "spec", "template")),
        ("Images", "string", 1, lambda o: _images(o, "spec", "template")),
        ("Selector", "string", 1, lambda o: selector_to_string(_get(o, "spec", "selector"))),
    ],
    "Service": [
        _NAME,
        ("Type", "string", 0, lambda o: _get(o, "spec", "type", default="ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: _get(o, "spec", "clusterIP", default="<none>")),
        ("External-IP", "string", 0, _external_ip),
        ("Port(s)", "string", 0, _service_ports),
        _AGE,
        ("Selector", "string", 1, lambda o: ",".join(f"{k}={v}" for k, v in sorted(_get(o, "spec", "selector", default={}).items())) or "<none>"),
    ],
    "Namespace": [_NAME, ("Status", "string", 0, lambda o: _get(o, "status", "phase", default="Active")), _AGE],
    "Node": [
        _NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        _AGE,
        ("Version", "string", 0, lambda o: _get(o, "status", "nodeInfo", "kubeletVersion", default="")),
        ("Internal-IP", "string", 1, lambda o: next((a.get("address") for a in _get(o, "status", "addresses", default=[]) if a.get("type") == "InternalIP"), "<none>")),
        ("External-IP", "string", 1, lambda o: "<none>"),
        ("OS-Image", "string", 1, lambda o: _get(o, "status", "nodeInfo", "osImage", default="")),
        ("Kernel-Version", "string", 1, lambda o: _get(o, "status", "nodeInfo", "kernelVersion", default="")),
        ("Container-Runtime", "string", 1, lambda o: _get(o, "status", "nodeInfo", "containerRuntimeVersion", default="")),
    ],
    "ConfigMap": [_NAME, ("Data", "integer", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), _AGE],
    "Secret": [
        _NAME,
        ("Type", "string", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o: len(o.get("data") or {})),
        _AGE,
    ],
    "ServiceAccount": [_NAME, ("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])), _AGE],
    "Endpoints": [_NAME, ("Endpoints", "string", 0, _endpoints), _AGE],
    "Event": [
        ("Last Seen", "string", 0, lambda o: human_duration(age_seconds(o.get("lastTimestamp") or o.get("eventTime") or _get(o, "metadata", "creationTimestamp")))),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, lambda o: f"{str(_get(o, 'involvedObject', 'kind', default='')).lower()}/{_get(o, 'involvedObject', 'name', default='')}"),
        ("Message", "string", 0, lambda o: o.get("message", "")),
        ("Count", "integer", 1, lambda o: o.get("count", 1)),
        ("Name", "string", 1, lambda o: _get(o, "metadata", "name", default="")),
    ],
    "Job": [
        _NAME,
        ("Status", "string", 0, _job_status),
        ("Completions", "string", 0, lambda o: f"{_get(o, 'status', 'succeeded', default=0)}/{_get(o, 'spec', 'completions', default=1)}"),
        ("Duration", "string", 0, lambda o: human_duration(age_seconds(_get(o, "status", "startTime"))) if _get(o, "status", "startTime") else ""),
        _AGE,
        ("Containers", "string", 1, lambda o: _names(o, "spec", "template")),
        ("Images", "string", 1, lambda o: _images(o, "spec", "template")),
    ],
    "CronJob": [
        _NAME,
        ("Schedule", "string", 0, lambda o: _get(o, "spec", "schedule", default="")),
        ("Timezone", "string", 0, lambda o: _get(o, "spec", "timeZone", default="<none>")),
        ("Suspend", "boolean", 0, lambda o: bool(_get(o, "spec", "suspend", default=False))),
        ("Active", "integer", 0, lambda o: len(_get(o, "status", "active", default=[]))),
        ("Last Schedule", "string", 0, lambda o: human_duration(age_seconds(_get(o, "status", "lastScheduleTime"))) if _get(o, "status", "lastScheduleTime") else "<none>"),
        _AGE,
    ],
    "PodDisruptionBudget": [
        _NAME,
        ("Min Available", "string", 0, lambda o: str(_get(o, "spec", "minAvailable", default="N/A"))),
        ("Max Unavailable", "string", 0, lambda o: str(_get(o, "spec", "maxUnavailable", default="N/A"))),
        ("Allowed Disruptions", "integer", 0, lambda o: _get(o, "status", "disruptionsAllowed", default=0)),
        _AGE,
    ],
    # kubectl's HPA columns; TARGETS shows <unknown> as no metrics server feeds the sandbox.
    "HorizontalPodAutoscaler": [
        _NAME,
        ("Reference", "string", 0, lambda o: f"{_get(o, 'spec', 'scaleTargetRef', 'kind', default='')}/"
                                             f"{_get(o, 'spec', 'scaleTargetRef', 'name', default='')}"),
        ("Targets", "string", 0, lambda o: ", ".join(
            f"cpu: <unknown>/{_get(m, 'resource', 'target', 'averageUtilization', default='')}%"
            for m in _get(o, "spec", "metrics", default=[]) or [] if m.get("type") == "Resource") or "<none>"),
        ("MinPods", "integer", 0, lambda o: _get(o, "spec", "minReplicas", default=1)),
        ("MaxPods", "integer", 0, lambda o: _get(o, "spec", "maxReplicas", default=0)),
        ("Replicas", "integer", 0, lambda o: _get(o, "status", "currentReplicas", default=0)),
        _AGE,
    ],
    "Lease": [_NAME, ("Holder", "string", 0, lambda o: _get(o, "spec", "holderIdentity", default="")), _AGE],
    "CustomResourceDefinition": [_NAME, ("Created At", "date", 0, lambda o: _get(o, "metadata", "creationTimestamp", default=""))],
    "MutatingWebhookConfiguration": [_NAME, ("Webhooks", "integer", 0, lambda o: len(o.get("webhooks") or [])), _AGE],
    "ValidatingWebhookConfiguration": [_NAME, ("Webhooks", "integer", 0, lambda o: len(o.get("webhooks") or [])), _AGE],
}

_FILTER = re.compile(r"^\[\?\(@\.([\w.]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]$")


def json_path(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: ``.a.b``, ``.a[0]``, ``.a[?(@.type=="Ready")].status``."""
    tokens = re.findall(r"\[[^\]]*\]|[^.\[\]]+", path.strip().strip("{}").lstrip("."))
    node = obj
    for token in tokens:
        if token.startswith("["):
            if not isinstance(node, list):
                return None
            if m := _FILTER.match(token):
                key_path, wanted = m.group(1).split("."), m.group(2)
                node = next((i for i in node if str(_get(i, *key_path, default="")) == wanted), None)
            elif token[1:-1].lstrip("-").isdigit():
                index = int(token[1:-1])
                node = node[index] if -len(node) <= index < len(node) else None
            else:
                return None
        else:
            node = node.get(token) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _custom_columns(rt: ResourceType) -> list[Column]:
    columns: list[Column] = [_NAME]
    has_age = False
    for spec in rt.printer_columns:
        path, col_type = spec.get("jsonPath", ""), spec.get("type", "string")
        if path == ".metadata.creationTimestamp":
            has_age = True

        def cell(o: Obj, path: str = path, col_type: str = col_type) -> Any:
            value = json_path(o, path)
            if col_type == "date" and isinstance(value, str):
                return human_duration(age_seconds(value))
            return "<none>" if value is None else value

        columns.append((spec.get("name", ""), "string" if col_type == "date" else col_type, int(spec.get("priority", 0)), cell))
    if not has_age:
        columns.append(_AGE)
    return columns


class TableConverter:
    def columns(self, rt: ResourceType) -> list[Column]:
        if rt.custom:
            return _custom_columns(rt)
        return _COLUMNS.get(rt.kind, [_NAME, _AGE])

    def table(
        self,
        rt: ResourceType,
        versions: list[StoredVersion],
        rv: int | None,
        continue_token: str | None,
        *,
        remaining: int | None = None,
        watch_row: bool = False,
    ) -> bytes:
        columns = self.columns(rt)
        meta: Obj = {}
        if rv is not None:
            meta["resourceVersion"] = str(rv)
        if continue_token:
            meta["continue"] = continue_token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
        rows = []
        for version in versions:
            obj = version.obj
            rows.append({
                "cells": [column[3](obj) for column in columns],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}},
            })
        definitions = [
            {
                "name": name,
                "type": col_type,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, col_type, priority, _ in columns
        ]
        return dumps({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "columnDefinitions": definitions,
            "rows": rows,
        })
