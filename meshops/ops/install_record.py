"""The record of the last ``meshops install`` in the cluster, for a later canary upgrade.

ConfigMap ``istio-system/meshops-install-overlay``: key ``overlay.yaml`` holds the rendered
overlay; annotations hold the profile list (JSON), the Istio version, the revision and the
overlay's sha256. A canary upgrade installs its new revision with ``read_recorded(kube)``'s
overlay, so the new control plane gets the same settings as the old one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meshops.domain import overlays
from meshops.domain.errors import NotFound
from meshops.drivers.kube_api import KubeApi, Obj


@dataclass(frozen=True, kw_only=True)
class RecordedInstall:
    overlay: str
    profiles: tuple[str, ...]
    version: str
    revision: str
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"overlay": self.overlay, "profiles": list(self.profiles), "version": self.version,
                "revision": self.revision, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordedInstall:
        return cls(overlay=str(data["overlay"]), profiles=tuple(data.get("profiles") or ()),
                   version=str(data.get("version", "")), revision=str(data.get("revision", "")),
                   sha256=str(data.get("sha256", "")))


def configmap(rec: RecordedInstall, namespace: str = overlays.RECORD_NAMESPACE) -> Obj:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": overlays.RECORD_CONFIGMAP, "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "meshops"},
            "annotations": {
                overlays.ANNOTATION_PROFILES: json.dumps(list(rec.profiles)),
                overlays.ANNOTATION_VERSION: rec.version,
                overlays.ANNOTATION_REVISION: rec.revision,
                overlays.ANNOTATION_SHA: rec.sha256,
            },
        },
        "data": {overlays.RECORD_KEY: rec.overlay},
    }


def parse_configmap(cm: Obj) -> RecordedInstall | None:
    data = cm.get("data") or {}
    if overlays.RECORD_KEY not in data:
        return None
    ann = (cm.get("metadata") or {}).get("annotations") or {}
    try:
        profiles = tuple(str(p) for p in json.loads(ann.get(overlays.ANNOTATION_PROFILES, "[]")))
    except ValueError:
        profiles = ()
    return RecordedInstall(overlay=str(data[overlays.RECORD_KEY]), profiles=profiles,
                           version=str(ann.get(overlays.ANNOTATION_VERSION, "")),
                           revision=str(ann.get(overlays.ANNOTATION_REVISION, "")),
                           sha256=str(ann.get(overlays.ANNOTATION_SHA, "")))


def read_recorded(kube: KubeApi, namespace: str = overlays.RECORD_NAMESPACE) -> RecordedInstall | None:
    """The settings of the last ``meshops install`` on this cluster, or None."""
    try:
        cm = kube.get("v1", "ConfigMap", overlays.RECORD_CONFIGMAP, namespace)
    except NotFound:
        return None
    return parse_configmap(cm) if cm else None


def write_recorded(kube: KubeApi, rec: RecordedInstall, namespace: str = overlays.RECORD_NAMESPACE) -> None:
    obj = configmap(rec, namespace)
    current = kube.get("v1", "ConfigMap", overlays.RECORD_CONFIGMAP, namespace)
    if current is None:
        kube.create(obj)
        return
    obj["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
    kube.replace(obj)


def delete_recorded(kube: KubeApi, namespace: str = overlays.RECORD_NAMESPACE) -> None:
    kube.delete("v1", "ConfigMap", overlays.RECORD_CONFIGMAP, namespace)
