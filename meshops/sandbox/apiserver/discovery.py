"""Discovery documents: /version, /api, /apis, per-group and per-version resource lists.

Both the legacy documents and aggregated discovery (``apidiscovery.k8s.io/v2``, which kubectl
1.26+ asks for first) are served. They are rebuilt only when the set of types changes.
"""

from __future__ import annotations

import threading
from typing import Any

from .jsonutil import dumps
from .kinds import ResourceType, ResourceTypes

Obj = dict[str, Any]

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_SUBRESOURCE_VERBS = ["get", "patch", "update"]
_VERBS_OF_SUBRESOURCE = {"finalize": ["update"], "log": ["get"]}


def version_info(k8s_version: str) -> Obj:
    version = k8s_version.lstrip("v")
    major, minor, *_ = [*version.split("."), "0", "0"]
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(max(0, int(minor) - 1)) if minor.isdigit() else minor,
        "gitVersion": f"v{version}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-08-14T00:00:00Z",
        "goVersion": "go1.22.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _resource_entries(t: ResourceType) -> list[Obj]:
    entry: Obj = {
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    out = [entry]
    for sub in sorted(t.subresources):
        if sub == "scale":
            out.append({
                "name": f"{t.plural}/scale", "singularName": "", "namespaced": t.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": _SUBRESOURCE_VERBS,
            })
        elif sub == "finalize":
            out.append({
                "name": f"{t.plural}/finalize", "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["update"],
            })
        else:
            out.append({
                "name": f"{t.plural}/{sub}", "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": _VERBS_OF_SUBRESOURCE.get(sub, _SUBRESOURCE_VERBS),
            })
    return out


def _aggregated_resource(t: ResourceType) -> Obj:
    entry: Obj = {
        "resource": t.plural,
        "responseKind": {"group": "", "version": "", "kind": t.kind},
        "scope": "Namespaced" if t.namespaced else "Cluster",
        "singularResource": t.singular,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    subs = []
    for sub in sorted(t.subresources):
        kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"} if sub == "scale" else {
            "group": "", "version": "", "kind": t.kind
        }
        subs.append({"subresource": sub, "responseKind": kind, "verbs": _VERBS_OF_SUBRESOURCE.get(sub, _SUBRESOURCE_VERBS)})
    if subs:
        entry["subresources"] = subs
    return entry


class Discovery:
    def __init__(self, types: ResourceTypes) -> None:
        self.types = types
        self._lock = threading.Lock()
        self._generation = -1
        self._docs: dict[str, bytes] = {}

    def document(self, path: str, *, aggregated: bool = False) -> bytes | None:
        """The JSON for a discovery path ("/api", "/apis/apps/v1"...), or None if not served."""
        with self._lock:
            if self._generation != self.types.generation:
                self._docs = self._build()
                self._generation = self.types.generation
            key = ("aggregated:" if aggregated else "") + path
            return self._docs.get(key)

    def _build(self) -> dict[str, bytes]:
        docs: dict[str, bytes] = {}
        by_gv: dict[tuple[str, str], list[ResourceType]] = {}
        for t in self.types.all():
            by_gv.setdefault((t.group, t.version), []).append(t)
        group_versions = self.types.group_versions()
        docs["/api"] = dumps({
            "kind": "APIVersions",
            "versions": group_versions.get("", ["v1"]),
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
        })
        groups = []
        for group, versions in group_versions.items():
            if not group:
                continue
            entry = {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
            }
            groups.append(entry)
            docs[f"/apis/{group}"] = dumps({"kind": "APIGroup", "apiVersion": "v1", **entry})
        docs["/apis"] = dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        for (group, version), types in by_gv.items():
            gv = f"{group}/{version}" if group else version
            resources = [r for t in sorted(types, key=lambda t: t.plural) for r in _resource_entries(t)]
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            docs[path] = dumps({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})

        def aggregated(selected: list[str]) -> bytes:
            items = []
            for group in selected:
                versions = [
                    {
                        "version": v,
                        "resources": [_aggregated_resource(t) for t in sorted(by_gv[(group, v)], key=lambda t: t.plural)],
                        "freshness": "Current",
                    }
                    for v in group_versions[group]
                ]
                items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": versions})
            return dumps({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})

        docs["aggregated:/api"] = aggregated([""])
        docs["aggregated:/apis"] = aggregated([g for g in group_versions if g])
        return docs
