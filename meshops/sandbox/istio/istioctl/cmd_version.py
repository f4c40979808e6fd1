"""`istioctl version` (pkg/version/cobra.go): client, control plane and data plane versions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from meshops.sandbox.istio.istioctl import mesh
from meshops.sandbox.istio.istioctl.common import CommandError, Context, bool_flag
from meshops.sandbox.istio.istioctl.output import go_json, go_yaml
from meshops.sandbox.istio.versions import IstioVersion, build_sha


def flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="")
    bool_flag(p, "--remote", default=True)
    bool_flag(p, "--short", default=True)
    p.add_argument("-r", "--revision", default="")


def build_info(version: str, *, client: IstioVersion | None = None) -> dict[str, str]:
    return {
        "version": version,
        "revision": build_sha(version),
        # Remote build infos come from istiod's /version, which leaves the Go version empty.
        "golang_version": client.go_version if client is not None else "",
        "status": "Clean",
        "tag": version,
    }


def _long(info: dict[str, str]) -> str:
    return (f'version.BuildInfo{{Version:"{info["version"]}", GitRevision:"{info["revision"]}", '
            f'GolangVersion:"{info["golang_version"]}", BuildStatus:"{info["status"]}", GitTag:"{info["tag"]}"}}')


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.output not in ("", "yaml", "json"):
        raise CommandError("--output must be 'yaml' or 'json'")
    doc: dict[str, Any] = {"clientVersion": build_info(str(ctx.version), client=ctx.version)}
    mesh_info: list[dict[str, Any]] | None = None
    data_plane: list[dict[str, str]] | None = None
    if args.remote:
        client = ctx.client()
        # One meshVersion entry per *ready* app=istiod pod; Component is the pod's `istio` label
        # (`pilot` default revision, `istiod` revisioned), Revision its istio.io/rev (reference §4).
        istiods = [i for i in mesh.istiods(client, ctx.istio_namespace)
                   if i.ready and (not args.revision or i.revision == args.revision)]
        if not istiods:
            print(f'Istio is not present in the cluster: no running Istio pods in "{ctx.istio_namespace}"',
                  file=sys.stderr)
        else:
            mesh_info = [{"Component": i.component, "Revision": i.revision, "Info": build_info(i.version)}
                         for i in istiods]
            data_plane = [{"ID": p.id, "IstioVersion": p.version, "Type": p.type}
                          for p in mesh.connected(mesh.proxies(client, istiods))]
            doc["meshVersion"] = mesh_info
            doc["dataPlaneVersion"] = data_plane

    if args.output == "json":
        print(go_json(doc))
    elif args.output == "yaml":
        print(go_yaml(doc))
    elif args.short:
        if mesh_info is not None or args.remote:
            print(f"client version: {ctx.version}")
        else:
            print(ctx.version)
        if mesh_info:
            versions = {m["Info"]["version"] for m in mesh_info}
            if len(versions) == 1:
                print(f"control plane version: {versions.pop()}")
            else:
                for m in mesh_info:
                    print(f"{m['Component']} version: {m['Info']['version']}")
        if data_plane is not None:
            print(f"data plane version: {render_proxy_versions(data_plane)}")
    else:
        print(f"client version: {_long(doc['clientVersion'])}" if mesh_info else _long(doc["clientVersion"]))
        for m in mesh_info or []:
            print(f"{m['Component']} version: {_long(m['Info'])}")
        for p in data_plane or []:
            print(f'data plane version: version.ProxyInfo{{ID:"{p["ID"]}", IstioVersion:"{p["IstioVersion"]}", '
                  f'Type:"{p["Type"]}"}}')
    return 0


def render_proxy_versions(proxies: list[dict[str, str]]) -> str:
    """`1.22.5 (3 proxies), 1.23.2 (40 proxies)`; `none` when empty (renderProxyVersions)."""
    if not proxies:
        return "none"
    counts: dict[str, int] = {}
    for p in proxies:
        counts[p["IstioVersion"]] = counts.get(p["IstioVersion"], 0) + 1
    return ", ".join(f"{v} ({counts[v]} proxies)" for v in sorted(counts))
