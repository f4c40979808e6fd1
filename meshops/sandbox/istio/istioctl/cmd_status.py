"""`istioctl proxy-status` (istioctl/pkg/writer/pilot/status.go), with the columns of each release.

1.21-1.26: NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD VERSION (cells carry an age from 1.23).
>=1.27:    NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES; `-v 1` adds one column per type.
`-o json|yaml` prints one xDS DiscoveryResponse per istiod, concatenated (not an array).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from meshops.sandbox.istio.istioctl import mesh
from meshops.sandbox.istio.istioctl.common import CommandError, Context
from meshops.sandbox.istio.istioctl.kube import KubeError
from meshops.sandbox.istio.istioctl.output import go_json, go_yaml, human_duration, now, tabwrite
from meshops.sandbox.istio.versions import build_sha

TYPE_URLS = {
    "CDS": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "LDS": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "EDS": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "RDS": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "ECDS": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
}
SUBSCRIBED = ["CDS", "LDS", "EDS", "RDS", "ECDS"]


def flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("pod", nargs="?", default="")
    p.add_argument("-r", "--revision", default="")
    p.add_argument("-o", "--output", default="")
    p.add_argument("-v", "--verbosity", type=int, default=0)


def _cells(proxy: mesh.Proxy, gateway_routes: bool, *, ages: bool) -> dict[str, str]:
    """Per-type sync state: a Ready proxy has ACKed everything istiod sent it."""
    age = f" ({human_duration((now() - proxy.ready_since).total_seconds())})" if ages and proxy.ready_since else ""
    synced = f"SYNCED{age}"
    state = synced if proxy.ready else "STALE"
    cells = {t: state for t in ("CDS", "LDS", "EDS", "RDS")}
    if proxy.type == "gateway" and not gateway_routes:
        cells["RDS"] = "NOT SENT"  # a gateway with no Gateway resource gets no routes
    cells["ECDS"] = "IGNORED" if ages else "NOT SENT"  # no EnvoyFilter/WasmPlugin extension configs
    return cells


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.output not in ("", "json", "yaml"):
        raise CommandError(f"unknown output format {args.output!r}; supported: json, yaml")
    client = ctx.client()
    istiods = [i for i in mesh.istiods(client, ctx.istio_namespace) if i.ready]
    if args.revision:
        istiods = [i for i in istiods if i.revision == args.revision]
    if not istiods:
        raise CommandError(f'unable to find any Istiod instances in namespace "{ctx.istio_namespace}"'
                           + (f' with revision "{args.revision}"' if args.revision else ""))
    proxies = mesh.connected(mesh.proxies(client, istiods))
    if ctx.namespace:
        proxies = [p for p in proxies if p.namespace == ctx.namespace]
    if args.pod:
        proxies = [p for p in proxies if args.pod in p.id]
    try:
        gateway_routes = bool(client.list("/apis/networking.istio.io/v1alpha3/gateways"))
    except KubeError:
        gateway_routes = False
    ages = ctx.version.proxy_status_ages

    if args.output:
        for cp in istiods:
            doc = _discovery_response(cp, [p for p in proxies if p.istiod == cp], gateway_routes, ages)
            print(go_json(doc) if args.output == "json" else "---\n" + go_yaml(doc), end="\n")
        return 0

    if ctx.version.proxy_status_subscriptions:
        if args.verbosity >= 1:
            types = sorted(SUBSCRIBED)
            rows = [["NAME", "CLUSTER", "ISTIOD", "VERSION", *types]]
            for p in proxies:
                cells = _cells(p, gateway_routes, ages=True)
                rows.append([p.id, p.cluster_id, p.istiod.pod if p.istiod else "", p.version,
                             *(cells[t] for t in types)])
        else:
            rows = [["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"]]
            for p in proxies:
                rows.append([p.id, p.cluster_id, p.istiod.pod if p.istiod else "", p.version,
                             f"{len(SUBSCRIBED)} ({','.join(SUBSCRIBED)})"])
    else:
        rows = [["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"]]
        for p in proxies:
            c = _cells(p, gateway_routes, ages=ages)
            rows.append([p.id, p.cluster_id, c["CDS"], c["LDS"], c["EDS"], c["RDS"], c["ECDS"],
                         p.istiod.pod if p.istiod else "", p.version])
    print(tabwrite(rows, padding=5), end="")
    return 0


def _discovery_response(cp: mesh.Istiod, proxies: list[mesh.Proxy], gateway_routes: bool, ages: bool) -> dict[str, Any]:
    resources = []
    for p in proxies:
        cells = _cells(p, gateway_routes, ages=False)
        resources.append({
            "@type": "type.googleapis.com/envoy.service.status.v3.ClientConfig",
            "node": {
                "id": p.id,
                "metadata": {"CLUSTER_ID": p.cluster_id, "ISTIO_VERSION": p.version, "NAMESPACE": p.namespace,
                             "NAME": p.pod, "LABELS": {}, "ISTIO_META_REVISION": p.revision},
                "userAgentName": "envoy",
            },
            "genericXdsConfigs": [
                {"typeUrl": TYPE_URLS[t], "configStatus": cells[t].split(" (")[0].replace("NOT SENT", "NOT_SENT")}
                for t in SUBSCRIBED
            ],
        })
    identifier = {"Component": "istiod", "ID": cp.pod,
                  "Info": {"version": cp.version, "revision": build_sha(cp.version),
                           "golang_version": "", "status": "Clean", "tag": cp.version}}
    return {
        "versionInfo": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": resources,
        "typeUrl": "istio.io/debug/syncz",
        "nonce": build_sha(cp.pod)[:20],
        "controlPlane": {"identifier": json.dumps(identifier, separators=(",", ":"))},
    }
