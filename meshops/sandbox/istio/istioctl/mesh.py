"""What istioctl learns from istiod, reconstructed from the cluster's objects.

Real istioctl asks each istiod over xDS which proxies are connected. The sandbox has no
istiod process, so the same facts are derived from what istiod would know: a proxy is
connected when its pod runs and a ready istiod pod of its revision exists; its version is
the tag of its `istio-proxy` image (so proxies injected by a revision report that revision's
version everywhere); it is synced once its pod is Ready.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meshops.sandbox.istio import injection, readiness
from meshops.sandbox.istio.istioctl.kube import Client
from meshops.sandbox.istio.istioctl.output import parse_time
from meshops.sandbox.istio.versions import image_tag

Obj = dict[str, Any]


@dataclass(frozen=True)
class Istiod:
    pod: str
    namespace: str
    revision: str
    version: str
    ready: bool
    cluster_id: str
    component: str = "pilot"  # the pod's `istio` label: pilot (default revision) or istiod (§1, §4)


@dataclass(frozen=True)
class Proxy:
    pod: str
    namespace: str
    revision: str
    version: str
    type: str  # "sidecar" | "gateway"
    image: str
    ready: bool
    ready_since: datetime | None
    cluster_id: str
    istiod: Istiod | None  # None: disconnected (no ready istiod of its revision)

    @property
    def id(self) -> str:
        return f"{self.pod}.{self.namespace}"


def _pod_ready(pod: Obj) -> tuple[bool, datetime | None]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", parse_time(cond.get("lastTransitionTime"))
    return False, None


def _running(pod: Obj) -> bool:
    meta = pod.get("metadata") or {}
    return (pod.get("status") or {}).get("phase") == "Running" and not meta.get("deletionTimestamp")


def _env(container: Obj, name: str) -> str:
    for e in container.get("env") or []:
        if e.get("name") == name:
            return str(e.get("value", ""))
    return ""


def istiods(client: Client, istio_namespace: str) -> list[Istiod]:
    out = []
    for pod in client.list(f"/api/v1/namespaces/{istio_namespace}/pods", label_selector="app=istiod"):
        if not _running(pod):
            continue
        container = next((c for c in pod["spec"].get("containers") or [] if c.get("name") == "discovery"),
                         (pod["spec"].get("containers") or [{}])[0])
        ready, _ = _pod_ready(pod)
        out.append(Istiod(
            pod=pod["metadata"]["name"],
            namespace=pod["metadata"]["namespace"],
            revision=(pod["metadata"].get("labels") or {}).get("istio.io/rev", "default"),
            version=image_tag(container.get("image", "")),
            ready=ready,
            cluster_id=_env(container, "CLUSTER_ID") or "Kubernetes",
            component=(pod["metadata"].get("labels") or {}).get("istio", ""),
        ))
    return sorted(out, key=lambda i: i.pod)


def proxies(client: Client, control_planes: list[Istiod]) -> list[Proxy]:
    by_rev: dict[str, list[Istiod]] = {}
    for cp in control_planes:
        if cp.ready:
            by_rev.setdefault(cp.revision, []).append(cp)
    out = []
    for pod in client.list("/api/v1/pods"):
        revision = injection.proxy_revision(pod)
        if revision is None or not _running(pod):
            continue
        container = injection.proxy_container(pod) or {}
        ready, since = _pod_ready(pod)
        meta = pod["metadata"]
        name = f"{meta['name']}.{meta['namespace']}"
        # A proxy talks to the istiod its CA_ADDR / discovery address names, whatever its labels
        # say (reference §2: an istioctl gateway's revision is baked into CA_ADDR).
        target = readiness.control_plane_of(container)
        if target is not None:
            revision = injection.revision_of_service(target[1])
        candidates = by_rev.get(revision, [])
        # Each proxy holds one xDS stream; spread them over the revision's istiods stably.
        chosen = candidates[zlib.crc32(name.encode()) % len(candidates)] if candidates else None
        out.append(Proxy(
            pod=meta["name"],
            namespace=meta["namespace"],
            revision=revision,
            version=image_tag(container.get("image", "")),
            type="gateway" if "router" in (container.get("args") or []) else "sidecar",
            image=container.get("image", ""),
            ready=ready,
            ready_since=since,
            cluster_id=_env(container, "ISTIO_META_CLUSTER_ID") or (chosen.cluster_id if chosen else "Kubernetes"),
            istiod=chosen,
        ))
    return sorted(out, key=lambda p: p.id)


def connected(all_proxies: list[Proxy]) -> list[Proxy]:
    return [p for p in all_proxies if p.istiod is not None]


def injector_images(client: Client, istio_namespace: str) -> dict[str, tuple[str, str]]:
    """revision -> (proxy image, global.variant) its injector would use (from
    `istio-sidecar-injector[-<rev>]` values, as the analyzer's GetIstioProxyImage reads it)."""
    out = {}
    for cm in client.list(f"/api/v1/namespaces/{istio_namespace}/configmaps"):
        name = cm["metadata"]["name"]
        if not name.startswith("istio-sidecar-injector"):
            continue
        try:
            values = json.loads((cm.get("data") or {}).get("values") or "{}")
        except ValueError:
            continue
        glob = values.get("global") or {}
        rev = values.get("revision") or "default"
        image = (glob.get("proxy") or {}).get("image") or "proxyv2"
        if "/" not in image:
            image = f"{glob.get('hub', 'docker.io/istio')}/{image}:{glob.get('tag', '')}"
        out[rev] = (image, str(glob.get("variant") or ""))
    return out
