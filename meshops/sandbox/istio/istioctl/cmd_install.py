"""`istioctl install|upgrade|uninstall|manifest generate|profile list`.

Install applies the rendered components in istioctl's order (core, istiod, gateways), waits
for their Deployments, and makes the installation the default when no default tag exists yet
(reference §1; ii@1.27.0 operator/pkg/webhook/webhook.go). It writes no `installed-state`
IstioOperator (not since 1.21, PR #47860) and deletes a leftover one (PR #47943).
Uninstall deletes by `istio.io/rev` + `operator.istio.io/component` (reference §4).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from meshops.sandbox.istio import manifests, webhooks
from meshops.sandbox.istio.istioctl import mesh
from meshops.sandbox.istio.istioctl.common import EXIT_DATA, CommandError, Context, bool_flag, confirm
from meshops.sandbox.istio.istioctl.kube import Client, KubeError, object_path, resource_path
from meshops.sandbox.istio.profiles import PROFILES, InstallPlan, ProfileError, build_plan

Obj = dict[str, Any]


def install_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_argument("--set", "-s", dest="set", action="append", default=[])
    p.add_argument("-r", "--revision", default=None)
    bool_flag(p, "--skip-confirmation")
    bool_flag(p, "--dry-run")
    bool_flag(p, "--force")
    bool_flag(p, "--verify")
    p.add_argument("--readiness-timeout", default="300s")
    p.add_argument("-d", "--manifests", default="")


def manifest_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_argument("--set", "-s", dest="set", action="append", default=[])
    p.add_argument("-r", "--revision", default=None)
    p.add_argument("-d", "--manifests", default="")
    p.add_argument("-o", "--output", default="")


def uninstall_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", action="append", default=[])
    p.add_argument("--set", "-s", dest="set", action="append", default=[])
    p.add_argument("-r", "--revision", default=None)
    bool_flag(p, "--skip-confirmation")
    bool_flag(p, "--purge")
    bool_flag(p, "--dry-run")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def parse_duration(text: str) -> float:
    """Go durations: 300s, 5m0s, 1m30s, 1h."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CommandError(f'invalid argument "{text}" for "--readiness-timeout" flag: time: invalid duration "{text}"', 64)
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _read_overlays(files: list[str]) -> list[Obj]:
    docs = []
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as e:
            raise CommandError(f"could not read {name}: {e}") from e
        try:
            docs += [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as e:
            raise CommandError(f"could not parse {name}: {e}", EXIT_DATA) from e
    return docs


def _plan(ctx: Context, args: argparse.Namespace) -> InstallPlan:
    try:
        return build_plan(ctx.version, overlays=_read_overlays(args.filename), sets=args.set, revision=args.revision)
    except ProfileError as e:
        raise CommandError(str(e)) from e


# --- install -------------------------------------------------------------------------------


def run_install(ctx: Context, args: argparse.Namespace) -> int:
    plan = _plan(ctx, args)
    client = ctx.client()
    timeout = parse_duration(args.readiness_timeout)
    _check_default_conflict(client, plan)
    _warn_kubernetes_version(client, ctx)

    if not args.skip_confirmation and not args.dry_run:
        if ctx.version.prompt_lists_components:
            comps = " ".join(f'"{t}"' for t in plan.component_titles())
            question = (f'This will install the Istio {ctx.version} "{plan.profile}" profile (with components: '
                        f"{comps}) into the cluster. Proceed? (y/N)")
        else:
            question = f'This will install the Istio {ctx.version} profile "{plan.profile}" into the cluster. Proceed? (y/N)'
        if not confirm(question):
            print("Cancelled.")
            return 1

    for warning in plan.warnings:
        print(f"! {warning}", file=sys.stderr)
    tick = "✔"
    for component in manifests.render(plan):
        if not args.dry_run:
            try:
                for obj in component.objects:
                    client.apply(obj, plan.namespace)
                _wait_ready(client, component.objects, timeout)
            except (KubeError, TimeoutError) as e:
                print(f"✘ {component.title} encountered an error: {_message(e)}", file=sys.stderr)
                raise CommandError("failed to install manifests: errors occurred during operation") from e
        icon = f" {component.emoji}" if ctx.version.install_emoji else ""
        print(f"{tick} {component.title} installed{icon}")
    if not args.dry_run:
        _prune(client, plan, {(o["kind"], o["metadata"]["name"]) for c in manifests.render(plan) for o in c.objects})
        _delete_installed_state(client, plan)
    print(f"{tick} Installation complete")

    if plan.pilot and (plan.revision == "" or not _default_exists(client)):
        # ii@1.22.0 wording; the tag keeps component=Pilot + owning-resource-not-pruned (§1).
        print("Made this installation the default for injection and validation.")
        if not args.dry_run:
            client.apply(webhooks.tag_configuration("default", plan.revision, namespace=plan.namespace,
                                                    by_install=True))
            client.apply(webhooks.default_validator(plan.revision, namespace=plan.namespace, by_install=True))
            client.apply(webhooks.tag_service("default", plan.revision, plan.namespace, by_install=True))
    return 0


def _delete_installed_state(client: Client, plan: InstallPlan) -> None:
    """A leftover `installed-state` IOP from istioctl <1.21 is deleted (PR #47943); a cluster
    without the IstioOperator CRD (istioctl stopped installing it) has nothing to delete."""
    path = resource_path("install.istio.io/v1alpha1", "IstioOperator", plan.namespace, manifests.saved_iop_name(plan))
    try:
        client.delete(path)
    except KubeError as e:
        if e.code != 404:
            raise


def _message(e: Exception) -> str:
    return e.message if isinstance(e, KubeError) else str(e)


def _default_exists(client: Client) -> bool:
    return bool(client.list(resource_path("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
                            label_selector="app=sidecar-injector,istio.io/tag=default"))


def _check_default_conflict(client: Client, plan: InstallPlan) -> None:
    """Refuse a second `default` revision (istio/istio#48643: it hijacks istio-injection=enabled)."""
    if not plan.pilot:
        return
    tags = client.list(resource_path("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
                       label_selector="istio.io/tag")
    if plan.revision == "":
        for conf in tags:
            if webhooks.configuration_tag(conf) == "default" and webhooks.configuration_revision(conf) != "default":
                raise CommandError(
                    f'the default revision is "{webhooks.configuration_revision(conf)}" (MutatingWebhookConfiguration '
                    f'{conf["metadata"]["name"]}); installing another "default" revision would take over injection for '
                    'istio-injection=enabled namespaces. Install with --revision, or move the default with '
                    "'istioctl tag set default'")
    elif any(webhooks.configuration_tag(c) == plan.revision for c in tags):
        raise CommandError(f'revision "{plan.revision}" conflicts with an existing revision tag of the same name')


def _warn_kubernetes_version(client: Client, ctx: Context) -> None:
    try:
        info = client.server_version()
        minor = int(re.sub(r"\D.*", "", str(info.get("minor", "0"))) or 0)
    except (KubeError, ValueError):
        return
    if minor and minor < ctx.version.min_k8s_minor:
        print(f"! Istio {ctx.version} may not be compatible with Kubernetes {info.get('gitVersion')}: "
              f"the minimum supported version is 1.{ctx.version.min_k8s_minor}", file=sys.stderr)


def _wait_ready(client: Client, objects: list[Obj], timeout: float) -> None:
    pending = [object_path(o) for o in objects if o["kind"] == "Deployment"]
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for path in pending:
            dep = client.get(path)
            if dep is None or not deployment_ready(dep):
                still.append(path)
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join("Deployment/" + "/".join(p.split("/")[-3::2]) for p in pending)
            raise TimeoutError(f"failed to wait for resource: resources not ready after {args_duration(timeout)}: "
                               f"context deadline exceeded\n  {names}")
        time.sleep(0.1)


def args_duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s}s" if m else f"{s}s"


def deployment_ready(dep: Obj) -> bool:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    return bool(status.get("observedGeneration", 0) >= (dep.get("metadata") or {}).get("generation", 0)
            and status.get("updatedReplicas", 0) >= want
            and status.get("availableReplicas", 0) >= want
            and status.get("replicas", 0) <= want + 0)


_PRUNABLE = [("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ServiceAccount"),
             ("policy/v1", "PodDisruptionBudget"), ("v1", "ConfigMap"),
             ("autoscaling/v2", "HorizontalPodAutoscaler")]


def _prune(client: Client, plan: InstallPlan, keep: set[tuple[str, str]]) -> None:
    """Remove what an earlier install of this revision created but this one no longer has.

    Objects of the revision's components (`istio.io/rev` + `operator.istio.io/component`) that
    this render lacks; `owning-resource-not-pruned=true` ones stay (the default tag)."""
    removed = []
    components = ",".join(manifests.PRUNED_COMPONENTS)
    selector = (f"istio.io/rev={plan.revision_label},operator.istio.io/component in ({components}),"
                "install.operator.istio.io/owning-resource-not-pruned!=true")
    for api_version, kind in _PRUNABLE:
        path = resource_path(api_version, kind, plan.namespace)
        for obj in client.list(path, label_selector=selector):
            name = obj["metadata"]["name"]
            if (kind, name) not in keep and client.delete(f"{path}/{name}"):
                removed.append(f"{kind}:{plan.namespace}:{name}")
    if removed:
        print("- Pruning removed resources")
        for r in removed:
            print(f"  Removed {r}.")


# --- manifest generate / profile list -------------------------------------------------------


def run_manifest_generate(ctx: Context, args: argparse.Namespace) -> int:
    plan = _plan(ctx, args)
    objects = [o for c in manifests.render(plan) for o in c.objects]
    if plan.pilot and plan.revision == "":
        objects += [webhooks.tag_configuration("default", "", by_install=True),
                    webhooks.default_validator("", by_install=True)]
    sys.stdout.write(manifests.to_yaml(objects))
    return 0


def run_profile_list(ctx: Context, args: argparse.Namespace) -> int:
    print("Istio configuration profiles:")
    for name in sorted(PROFILES):
        print(f"    {name}")
    return 0


# --- uninstall -------------------------------------------------------------------------------

# What `uninstall --revision R` deletes: objects labelled istio.io/rev=R *and* with an
# operator.istio.io/component of manifests.PRUNED_COMPONENTS (ii@1.27.0 operator/pkg/uninstall/
# prune.go, reference §4). That includes an istioctl gateway Deployment and its LoadBalancer
# Service carrying rev=R; Helm `gateway` chart objects (no component label) survive, and so do
# tags made by `tag set` (operator labels stripped). The sandbox serves no RBAC, Secrets are
# not rendered, and it has no EnvoyFilter of its own, so those kinds are not listed here.
_OWNED_KINDS = [
    ("apps/v1", "Deployment", True), ("apps/v1", "DaemonSet", True), ("v1", "Service", True),
    ("v1", "ConfigMap", True), ("v1", "Pod", True), ("v1", "Secret", True), ("v1", "ServiceAccount", True),
    ("policy/v1", "PodDisruptionBudget", True), ("autoscaling/v2", "HorizontalPodAutoscaler", True),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", False),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", False),
]


def _revision_objects(client: Client, ns: str, selector: str) -> list[tuple[str, str, str, Obj]]:
    out = []
    for api_version, kind, namespaced in _OWNED_KINDS:
        path = resource_path(api_version, kind, ns if namespaced else None)
        try:
            items = client.list(path, label_selector=selector)
        except KubeError as e:
            if e.code == 404:  # a kind this cluster does not serve
                continue
            raise
        out += [(path, kind, f"{kind}:{ns + ':' if namespaced else ''}{o['metadata']['name']}", o) for o in items]
    return out


def run_uninstall(ctx: Context, args: argparse.Namespace) -> int:
    revision = args.revision
    for s in args.set:
        if s.startswith("revision="):
            revision = s.split("=", 1)[1]
    if revision is None and not args.purge and not args.filename:
        raise CommandError("at least one of the --revision (or --set revision=<revision>), --filename or --purge "
                           "flags must be set", 64)
    if args.filename and revision is None:
        revision = _plan(ctx, args).revision
    client = ctx.client()
    ns = ctx.istio_namespace
    rev_label = revision or "default"
    components = ",".join(manifests.PRUNED_COMPONENTS)
    selector = (f"operator.istio.io/component in ({components})" if args.purge
                else f"istio.io/rev={rev_label},operator.istio.io/component in ({components})")
    targets = _revision_objects(client, ns, selector)
    if not targets and not args.purge:
        raise CommandError(f"could not find target revision {rev_label} in the cluster")

    message = ""
    if args.purge:
        message = "All Istio resources will be pruned from the cluster\n"
    else:
        gateways = [o["metadata"]["name"] for _, kind, _, o in targets if kind == "Deployment"
                    and (o["metadata"].get("labels") or {}).get("operator.istio.io/component")
                    in ("IngressGateways", "EgressGateways")]
        if gateways:
            message += ("You are about to remove the following gateways: " + ", ".join(gateways) + ". To avoid "
                        "downtime, please quit this command and reinstall the gateway(s) with a revision that is "
                        "not being removed from the cluster.\n")
        stuck = [p.id for p in mesh.connected(mesh.proxies(client, mesh.istiods(client, ns)))
                 if p.revision == rev_label]
        if stuck:
            message += f"There are still {len(stuck)} proxies pointing to the control plane revision {rev_label}\n"
            if len(stuck) <= 30:
                message += "\n".join(stuck) + "\n"
            message += ("If you proceed with the uninstall, these proxies will become detached from any control "
                        "plane and will not function correctly.\n")
    if message:
        if not args.skip_confirmation and not args.dry_run:
            if not confirm(message + "Proceed? (y/N)"):
                print("Cancelled.")
                return 1
        else:
            sys.stdout.write(message)

    removed = []
    for path, _kind, label, obj in targets:
        if args.dry_run or client.delete(f"{path}/{obj['metadata']['name']}"):
            removed.append(label)
    if args.purge:
        for conf_kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            path = resource_path("admissionregistration.k8s.io/v1", conf_kind)
            for obj in client.list(path, label_selector="istio.io/rev"):
                if args.dry_run or client.delete(f"{path}/{obj['metadata']['name']}"):
                    removed.append(f"{conf_kind}::{obj['metadata']['name']}")
        crd_path = resource_path("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        for crd in client.list(crd_path):
            istio_crd = crd["spec"]["group"].endswith("istio.io")
            if istio_crd and (args.dry_run or client.delete(f"{crd_path}/{crd['metadata']['name']}")):
                removed.append(f"CustomResourceDefinition::{crd['metadata']['name']}")
    for r in removed:
        print(f"  Removed {r}.")
    print("✔ Uninstall complete")
    return 0
