"""`istioctl analyze` and `istioctl x precheck`: diagnostics in istioctl's formats and exit codes.

Analyzers modelled (codes and texts from pkg/config/analysis/msg/messages.gen.go):
IST0101 ReferencedResourceNotFound, IST0102 NamespaceNotInjected, IST0103 PodMissingProxy,
IST0158 PodsIstioProxyImageMismatchInNamespace (IST0105 is retired since 1.18: reference §4),
IST0123 NamespaceMultipleInjectionLabels, IST0139 InvalidWebhook;
precheck adds IST0142 UnsupportedKubernetesVersion.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshops.sandbox.istio import injection, webhooks
from meshops.sandbox.istio.istioctl import mesh
from meshops.sandbox.istio.istioctl.common import (
    EXIT_ANALYZE_ISSUES,
    EXIT_DATA,
    CommandError,
    Context,
    bool_flag,
)
from meshops.sandbox.istio.istioctl.kube import Client, KubeError, resource_path
from meshops.sandbox.istio.istioctl.output import go_json, go_yaml

Obj = dict[str, Any]
LEVELS = {"Info": 0, "Warning": 1, "Error": 2}
SYSTEM_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease", "local-path-storage", "istio-system"}


@dataclass(frozen=True)
class Message:
    code: str
    level: str
    origin: str
    text: str

    def log(self) -> str:
        return f"{self.level} [{self.code}] ({self.origin}) {self.text}"

    def as_dict(self, docs: str) -> dict[str, str]:
        return {"code": self.code, "level": self.level, "origin": self.origin, "message": self.text,
                "documentationUrl": f"{docs}/reference/config/analysis/{self.code.lower()}/"}


def _level(text: str, flag: str) -> str:
    for name in LEVELS:
        if name.lower() == text.lower():
            return name
    raise CommandError(f'invalid argument "{text}" for "--{flag}" flag: {text} not a valid option, '
                       "should be one of [Info Warning Error]", 64)


def analyze_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*")
    bool_flag(p, "--all-namespaces")
    bool_flag(p, "--use-kube", default=True)
    p.add_argument("-o", "--output", default="log")
    p.add_argument("--failure-threshold", default="Error")
    p.add_argument("--output-threshold", default="Info")
    p.add_argument("-r", "--revision", default="default")


def precheck_flags(p: argparse.ArgumentParser) -> None:
    bool_flag(p, "--skip-controlplane")
    p.add_argument("-o", "--output", default="log")
    p.add_argument("--output-threshold", default="Warning")
    p.add_argument("-f", "--from-version", default="")
    p.add_argument("-r", "--revision", default="")


def _print(messages: list[Message], fmt: str, docs: str) -> None:
    if fmt == "log":
        for m in messages:
            print(m.log())
    elif fmt == "json":
        print(go_json([m.as_dict(docs) for m in messages], indent="\t"))
    elif fmt == "yaml":
        print(go_yaml([m.as_dict(docs) for m in messages]), end="")
    else:
        raise CommandError(f"invalid output format {fmt!r}; valid formats: log, json, yaml", 64)


# --- analyze -----------------------------------------------------------------------------------


def run_analyze(ctx: Context, args: argparse.Namespace) -> int:
    failure, threshold = _level(args.failure_threshold, "failure-threshold"), _level(args.output_threshold, "output-threshold")
    if args.output not in ("log", "json", "yaml"):
        raise CommandError(f"invalid output format {args.output!r}; valid formats: log, json, yaml", 64)
    local = _read_files(args.files)
    client = ctx.client() if args.use_kube else None
    target = "all namespaces" if args.all_namespaces else f"namespace: {ctx.default_namespace}"
    scope = None if args.all_namespaces else ctx.default_namespace
    state = ClusterState.load(client, ctx.istio_namespace, local)
    messages = sorted(set(analyze(state, scope)), key=lambda m: (m.origin, m.code, m.text))
    shown = [m for m in messages if LEVELS[m.level] >= LEVELS[threshold]]
    if shown:
        _print(shown, args.output, ctx.version.docs_url)
    elif args.output == "log":
        print(f"✔ No validation issues found when analyzing {target}.", file=sys.stderr)
    else:
        _print([], args.output, ctx.version.docs_url)
    if any(LEVELS[m.level] >= LEVELS[failure] for m in messages):
        raise CommandError(f"Analyzers found issues when analyzing {target}.\nSee {ctx.version.docs_url}/reference/"
                           "config/analysis for more information about causes and resolutions.", EXIT_ANALYZE_ISSUES)
    return 0


def _read_files(files: list[str]) -> list[Obj]:
    docs: list[Obj] = []
    for name in files:
        paths = sorted(Path(name).glob("*.yaml")) if Path(name).is_dir() else [Path(name)]
        for path in paths:
            try:
                docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
            except (OSError, yaml.YAMLError) as e:
                raise CommandError(f"error reading {path}: {e}", EXIT_DATA) from e
    return docs


@dataclass
class ClusterState:
    namespaces: dict[str, Obj]
    pods: list[Obj]
    services: set[tuple[str, str]]
    mwcs: list[Obj]
    vwcs: list[Obj]
    injector_images: dict[str, tuple[str, str]]  # revision -> (image, variant)
    istio: list[Obj]  # Istio config objects (cluster and local files)

    @classmethod
    def load(cls, client: Client | None, istio_ns: str, local: list[Obj]) -> ClusterState:
        if client is None:
            return cls({}, [], set(), [], [], {}, local)
        istio: list[Obj] = []
        for kind, path in (("VirtualService", "virtualservices"), ("Gateway", "gateways"),
                           ("DestinationRule", "destinationrules")):
            with contextlib.suppress(KubeError):  # CRDs not installed: nothing to analyze
                istio += [{**o, "kind": kind} for o in client.list(f"/apis/networking.istio.io/v1alpha3/{path}")]
        return cls(
            namespaces={n["metadata"]["name"]: n for n in client.list("/api/v1/namespaces")},
            pods=client.list("/api/v1/pods"),
            services={(s["metadata"]["namespace"], s["metadata"]["name"]) for s in client.list("/api/v1/services")},
            mwcs=client.list(resource_path("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")),
            vwcs=client.list(resource_path("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")),
            injector_images=mesh.injector_images(client, istio_ns),
            istio=istio + local,
        )


def _ns_labels(state: ClusterState, ns: str) -> dict[str, str]:
    return dict((state.namespaces.get(ns, {}).get("metadata") or {}).get("labels") or {})


def analyze(state: ClusterState, scope: str | None) -> list[Message]:
    out: list[Message] = []

    def in_scope(ns: str) -> bool:
        return scope is None or ns == scope

    for name in sorted(state.namespaces):
        if not in_scope(name) or name in SYSTEM_NAMESPACES:
            continue
        labels = _ns_labels(state, name)
        if "istio-injection" not in labels and "istio.io/rev" not in labels:
            out.append(Message("IST0102", "Info", f"Namespace {name}",
                               f"The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} "
                               f"istio-injection=enabled' to enable it, or 'kubectl label namespace {name} "
                               "istio-injection=disabled' to explicitly mark it as not needing injection."))
        elif "istio-injection" in labels and "istio.io/rev" in labels:
            out.append(Message("IST0123", "Warning", f"Namespace {name}",
                               "The namespace has both new and legacy injection labels. Run 'kubectl label namespace "
                               f"{name} istio.io/rev-' or 'kubectl label namespace {name} istio-injection-'"))

    for pod in state.pods:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if not in_scope(ns) or ns in SYSTEM_NAMESPACES or (pod.get("status") or {}).get("phase") != "Running":
            continue
        template = {"metadata": {"labels": meta.get("labels") or {},
                                 "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                                                 if k != injection.STATUS_ANNOTATION}},
                    "spec": {"hostNetwork": (pod.get("spec") or {}).get("hostNetwork", False)}}
        would_inject = injection.injecting_revision(state.mwcs, namespace=ns, namespace_labels=_ns_labels(state, ns),
                                                    pod=template)
        if injection.proxy_container(pod) is None and would_inject:
            out.append(Message("IST0103", "Warning", f"Pod {ns}/{name}",
                               f"The pod {ns}/{name} is missing the Istio proxy. This can often be resolved by "
                               "restarting or redeploying the workload."))
    out += _image_mismatch(state, in_scope)
    out += _references(state, in_scope)
    out += _webhooks(state)
    return out


def _image_mismatch(state: ClusterState, in_scope: Any) -> list[Message]:
    """IST0158 PodsIstioProxyImageMismatchInNamespace (Warning), one per namespace (reference §4;
    ii@1.27.0 pkg/config/analysis/analyzers/injection ImageAnalyzer): `istio-proxy` in containers
    and initContainers against the image of the injector ConfigMap the namespace's label picks
    (istio-injection=enabled: the default one; istio.io/rev=X: istio-sidecar-injector-X, so a
    tag name finds no ConfigMap and is skipped). `image` or `image-<variant>` both match.
    IST0105 (per pod) is retired since 1.18 and never reported."""
    mismatched: dict[str, list[str]] = {}
    for pod in state.pods:
        meta = pod["metadata"]
        ns = meta["namespace"]
        if not in_scope(ns) or ns in SYSTEM_NAMESPACES or (pod.get("status") or {}).get("phase") != "Running":
            continue
        labels = _ns_labels(state, ns)
        if labels.get("istio-injection") == "enabled":
            rev = "default"
        elif labels.get("istio.io/rev"):
            rev = labels["istio.io/rev"]
        else:
            continue
        expected = state.injector_images.get(rev)
        if not expected:
            continue
        image, variant = expected
        spec = pod.get("spec") or {}
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
            if c.get("name") == "istio-proxy" and c.get("image") not in (image, f"{image}-{variant}"):
                mismatched.setdefault(ns, []).append(meta["name"])
    return [Message("IST0158", "Warning", f"Namespace {ns}",
                    "The Istio proxy images of the pods running in the namespace do not match the image defined in "
                    f"the injection configuration (pod names: [{' '.join(pods)}]). This often happens after upgrading "
                    "the Istio control-plane and can be fixed by redeploying the pods.")
            for ns, pods in sorted(mismatched.items())]


def _host_exists(state: ClusterState, host: str, ns: str) -> bool:
    if "*" in host or any(host in (o.get("spec") or {}).get("hosts", []) for o in state.istio if o.get("kind") == "ServiceEntry"):
        return True
    parts = host.split(".")
    if len(parts) == 1:
        return (ns, host) in state.services
    if len(parts) >= 2 and (len(parts) == 2 or host.endswith(".svc.cluster.local") or host.endswith(".svc")):
        return (parts[1], parts[0]) in state.services
    return True  # external names are not the analyzer's business


def _references(state: ClusterState, in_scope: Any) -> list[Message]:
    out = []
    gateways = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"])
                for o in state.istio if o.get("kind") == "Gateway"}
    subsets: dict[tuple[str, str], set[str]] = {}
    for dr in (o for o in state.istio if o.get("kind") == "DestinationRule"):
        host = (dr.get("spec") or {}).get("host", "")
        subsets.setdefault((dr["metadata"].get("namespace", "default"), host.split(".")[0]), set()).update(
            s.get("name") for s in (dr.get("spec") or {}).get("subsets") or [])
    for vs in (o for o in state.istio if o.get("kind") == "VirtualService"):
        ns = vs["metadata"].get("namespace", "default")
        if not in_scope(ns):
            continue
        origin = f"VirtualService {ns}/{vs['metadata']['name']}"
        spec = vs.get("spec") or {}
        for gw in spec.get("gateways") or []:
            if gw == "mesh":
                continue
            gns, gname = gw.split("/", 1) if "/" in gw else (ns, gw)
            if (gns, gname) not in gateways:
                out.append(Message("IST0101", "Error", origin, f'Referenced gateway not found: "{gw}"'))
        for http in spec.get("http") or []:
            for route in http.get("route") or []:
                dest = route.get("destination") or {}
                host = dest.get("host", "")
                if host and not _host_exists(state, host, ns):
                    out.append(Message("IST0101", "Error", origin, f'Referenced host not found: "{host}"'))
                elif dest.get("subset") and dest["subset"] not in subsets.get((ns, host.split(".")[0]), set()):
                    out.append(Message("IST0101", "Error", origin,
                                       f'Referenced host+subset in destinationrule not found: "{host}+{dest["subset"]}"'))
    return out


def _webhooks(state: ClusterState) -> list[Message]:
    out = []
    for kind, confs in (("MutatingWebhookConfiguration", state.mwcs), ("ValidatingWebhookConfiguration", state.vwcs)):
        for conf in confs:
            missing: dict[tuple[str, str], list[str]] = {}
            for wh in conf.get("webhooks") or []:
                if not (webhooks.is_istio_injector(wh) or webhooks.is_istio_validator(wh)):
                    continue
                ref = webhooks.service_ref(wh)
                if ref and ref not in state.services and wh.get("namespaceSelector") != webhooks.NEVER_MATCH:
                    missing.setdefault(ref, []).append(wh["name"])
            for (svc_ns, svc), names in sorted(missing.items()):
                out.append(Message("IST0139", "Error", f"{kind} {conf['metadata']['name']}",
                                   f"Webhook(s) {', '.join(names)} refer to service {svc_ns}/{svc}, which does not exist"))
    for ns in sorted(state.namespaces):
        labels = _ns_labels(state, ns)
        matched = [m for m in injection.matching_webhooks(state.mwcs, namespace=ns, namespace_labels=labels, object_labels={})
                   if webhooks.is_istio_injector(m.webhook) and m.service]
        revs = {injection.revision_of_service(m.service[1]) for m in matched if m.service}
        if len(revs) > 1:
            conf_names = ", ".join(sorted({m.configuration for m in matched}))
            out.append(Message("IST0139", "Error", f"Namespace {ns}",
                               f"Webhooks of more than one revision ({', '.join(sorted(revs))}) inject pods in this "
                               f"namespace ({conf_names}); the first by name wins"))
    return out


# --- precheck ----------------------------------------------------------------------------------


def run_precheck(ctx: Context, args: argparse.Namespace) -> int:
    threshold = _level(args.output_threshold, "output-threshold")
    messages: list[Message] = []
    if not args.skip_controlplane:
        client = ctx.client()
        try:
            info = client.server_version()
        except KubeError as e:
            raise CommandError(f"failed to get the Kubernetes version: {e.message}") from e
        minor = int(re.sub(r"\D.*", "", str(info.get("minor", "0"))) or 0)
        if minor < ctx.version.min_k8s_minor:
            messages.append(Message("IST0142", "Error", "Cluster",
                                    f'The Kubernetes Version "{info.get("gitVersion")}" is lower than the minimum '
                                    f"version: 1.{ctx.version.min_k8s_minor}"))
    if args.from_version and not re.fullmatch(r"1\.\d+", args.from_version):
        raise CommandError(f"invalid version {args.from_version}, expected format like '1.0'")
    shown = [m for m in messages if LEVELS[m.level] >= LEVELS[threshold]]
    if not shown:
        print("✔ No issues found when checking the cluster. Istio is safe to install or upgrade!\n"
              "  To get started, check out https://istio.io/latest/docs/setup/getting-started/.", file=sys.stderr)
    else:
        _print(shown, args.output, ctx.version.docs_url)
    if any(LEVELS[m.level] >= LEVELS["Warning"] for m in messages):
        raise CommandError("Issues found when checking the cluster. Istio may not be safe to install or upgrade.\n"
                           f"See {ctx.version.docs_url}/reference/config/analysis for more information about causes "
                           "and resolutions.")
    return 0
