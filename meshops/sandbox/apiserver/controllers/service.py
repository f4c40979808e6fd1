"""Service controllers: LoadBalancer hostnames and Endpoints.

A ``LoadBalancer`` Service gets ``status.loadBalancer.ingress[0].hostname`` like an AWS ELB's
(``<name>-<hash>.<cluster>.elb.sandbox.local``). Services with a selector get an Endpoints
object and an EndpointSlice listing ready and not-ready pod addresses, updated as pods come
and go (the slice is owned by the Service, so it goes with it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from typing import Any

from ..errors import ApiError
from ..kinds import ENDPOINTS, ENDPOINTSLICES, NODES, PODS, SERVICES
from ..store import StoreEvent
from .base import Controller
from .util import is_terminating, owner_ref, pod_ready, write_status

Obj = dict[str, Any]


def _endpoint_view(pod: Obj | None) -> tuple[Any, ...] | None:
    """What of a pod matters to Endpoints; other changes do not wake the controller."""
    if pod is None:
        return None
    status = pod.get("status") or {}
    return (pod["metadata"].get("labels"), status.get("podIP"), pod_ready(pod), is_terminating(pod), status.get("phase"))


def lb_hostname(cluster_name: str, svc: Obj) -> str:
    digest = hashlib.sha1(svc["metadata"]["uid"].encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{svc['metadata']['name']}-{digest}.{cluster_name}.elb.sandbox.local"


class ServiceController(Controller):
    name = "service"
    watches = (SERVICES, PODS)

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == SERVICES:
            return [(event.namespace, event.name)]
        if event.type == "MODIFIED" and _endpoint_view(event.obj) == _endpoint_view(event.old):
            return ()
        return [
            (event.namespace, v.obj["metadata"]["name"])
            for v in self.store.iter_versions(SERVICES, event.namespace)
            if (v.obj.get("spec") or {}).get("selector")
        ]

    def initial_keys(self) -> Iterable[Hashable]:
        return [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in self.store.list(SERVICES)[0]]

    def sync(self, key: tuple[str, str]) -> None:
        namespace, name = key
        svc = self.store.get(SERVICES, namespace, name)
        if svc is None:
            self._delete_endpoints(namespace, name)
            return
        spec = svc.get("spec") or {}
        if spec.get("type") == "LoadBalancer":
            status = dict(svc.get("status") or {})
            if not (status.get("loadBalancer") or {}).get("ingress"):
                status["loadBalancer"] = {"ingress": [{"hostname": lb_hostname(self.cluster.name, svc)}]}
                svc = write_status(self.cluster, SERVICES, svc, status)
        elif (svc.get("status") or {}).get("loadBalancer", {}).get("ingress"):
            svc = write_status(self.cluster, SERVICES, svc, {**(svc.get("status") or {}), "loadBalancer": {}})
        selector = spec.get("selector")
        if not selector:
            return
        self._sync_endpoints(svc, selector)

    def _sync_endpoints(self, svc: Obj, selector: dict[str, str]) -> None:
        namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        pods = [
            p for p in self.store.list(PODS, namespace)[0]
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and (p.get("status") or {}).get("podIP")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        for pod in pods:
            address = {
                "ip": pod["status"]["podIP"],
                "nodeName": (pod.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            }
            (ready if pod_ready(pod) and not is_terminating(pod) else not_ready).append(address)
        ports = [self._port(p, pods) for p in (svc.get("spec") or {}).get("ports") or []]
        subsets = []
        if ready or not_ready:
            subset: Obj = {"ports": ports}
            if ready:
                subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
            subsets.append(subset)
        body: Obj = {"metadata": {"name": name, "namespace": namespace, "labels": dict(svc["metadata"].get("labels") or {})}}
        if subsets:
            body["subsets"] = subsets
        self._sync_slice(svc, pods, ports)
        current = self.store.get(ENDPOINTS, namespace, name)
        try:
            if current is None:
                self.api.create(ENDPOINTS, body, namespace=namespace)
            elif current.get("subsets") != body.get("subsets") or current["metadata"].get("labels") != body["metadata"]["labels"]:
                updated = {**current, "metadata": {**current["metadata"], "labels": body["metadata"]["labels"]}}
                updated.pop("subsets", None)
                if subsets:
                    updated["subsets"] = subsets
                self.api.update(ENDPOINTS, updated, namespace=namespace)
        except ApiError as e:
            if e.code not in (403, 404, 409):
                raise

    def _sync_slice(self, svc: Obj, pods: list[Obj], ports: list[Obj]) -> None:
        """The service's EndpointSlice (one per Service: the sandbox never needs to split them)."""
        namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        slice_name = f"{name}-{hashlib.sha1(svc['metadata']['uid'].encode(), usedforsecurity=False).hexdigest()[:5]}"
        endpoints = []
        for pod in sorted(pods, key=lambda p: p["status"]["podIP"]):
            ready = pod_ready(pod) and not is_terminating(pod)
            node = self.store.get(NODES, "", (pod.get("spec") or {}).get("nodeName") or "") or {}
            endpoint: Obj = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": pod_ready(pod), "terminating": is_terminating(pod)},
                "nodeName": (pod.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            }
            zone = (node.get("metadata", {}).get("labels") or {}).get("topology.kubernetes.io/zone")
            if zone:
                endpoint["zone"] = zone
            endpoints.append(endpoint)
        labels = {
            **(svc["metadata"].get("labels") or {}),
            "kubernetes.io/service-name": name,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        }
        body: Obj = {
            "metadata": {"name": slice_name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_ref(svc)]},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        current = self.store.get(ENDPOINTSLICES, namespace, slice_name)
        try:
            if current is None:
                self.api.create(ENDPOINTSLICES, body, namespace=namespace, owned=True)
            elif (current.get("endpoints"), current.get("ports"), current["metadata"].get("labels")) != (endpoints, ports, labels):
                updated = {**current, "endpoints": endpoints, "ports": ports, "metadata": {**current["metadata"], "labels": labels}}
                self.api.update(ENDPOINTSLICES, updated, namespace=namespace)
        except ApiError as e:
            if e.code not in (403, 404, 409):
                raise

    @staticmethod
    def _port(port: Obj, pods: list[Obj]) -> Obj:
        target = port.get("targetPort", port.get("port"))
        number = target
        if isinstance(target, str) and not target.isdigit():
            number = None
            for pod in pods:
                for c in (pod.get("spec") or {}).get("containers") or []:
                    for cp in c.get("ports") or []:
                        if cp.get("name") == target:
                            number = cp.get("containerPort")
            number = number or port.get("port")
        out: Obj = {"port": int(number or 0), "protocol": port.get("protocol", "TCP")}
        if port.get("name"):
            out["name"] = port["name"]
        if port.get("appProtocol"):
            out["appProtocol"] = port["appProtocol"]
        return out

    def _delete_endpoints(self, namespace: str, name: str) -> None:
        try:
            self.api.delete(ENDPOINTS, namespace, name)
        except ApiError as e:
            if e.code != 404:
                raise
