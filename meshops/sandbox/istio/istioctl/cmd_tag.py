"""`istioctl tag set|generate|list|remove` (istioctl/pkg/tag): revision tags as webhook configurations."""

from __future__ import annotations

import argparse
from typing import Any

from meshops.sandbox.istio import webhooks
from meshops.sandbox.istio.istioctl.common import CommandError, Context, UsageError, bool_flag, confirm
from meshops.sandbox.istio.istioctl.kube import Client, KubeError, resource_path
from meshops.sandbox.istio.istioctl.output import go_json, go_yaml, tabwrite
from meshops.sandbox.istio.manifests import to_yaml

MWC_PATH = resource_path("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
VWC_PATH = resource_path("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")

TAG_CREATED = ('Revision tag "{tag}" created, referencing control plane revision "{rev}". To enable injection using '
               "this\nrevision tag, use 'kubectl label namespace <NAMESPACE> istio.io/rev={tag}'")


def set_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("tag", nargs="*")
    p.add_argument("-r", "--revision", default="")
    bool_flag(p, "--overwrite")
    bool_flag(p, "--skip-confirmation")
    bool_flag(p, "--auto-inject-namespaces")
    p.add_argument("--webhook-name", default="")
    p.add_argument("-d", "--manifests", default="")


def list_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("extra", nargs="*")
    p.add_argument("-o", "--output", default="table")


def remove_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("tag", nargs="*")
    bool_flag(p, "--skip-confirmation")


def _one_tag(args: argparse.Namespace, verb: str) -> str:
    if not args.tag:
        raise UsageError(f"must provide a tag for {verb}")
    if len(args.tag) > 1:
        raise UsageError(f"must provide a single tag for {verb}")
    return str(args.tag[0])


def _generate(client: Client, tag: str, revision: str, *, overwrite: bool, generate: bool, name: str,
              namespace: str) -> list[dict[str, Any]]:
    if not revision:
        raise CommandError('required flag(s) "revision" not set')
    collisions = client.list(MWC_PATH, label_selector=f"istio.io/rev={tag},!istio.io/tag")
    if collisions and not generate and not overwrite and tag != "default":
        raise CommandError(f'cannot create revision tag "{tag}": found existing control plane revision with same name')
    canonical = client.list(MWC_PATH, label_selector=f"istio.io/rev={revision},!istio.io/tag")
    if not canonical:
        raise CommandError(f'cannot modify tag: cannot find MutatingWebhookConfiguration with revision "{revision}"')
    if len(canonical) > 1:
        raise CommandError(f'cannot modify tag: found multiple canonical webhooks with revision "{revision}"')
    if client.list(MWC_PATH, label_selector=f"istio.io/tag={tag}") and not overwrite:
        raise CommandError(f'revision tag "{tag}" already exists, and --overwrite is false')
    base_rev = webhooks.configuration_revision(canonical[0])
    rev = "" if base_rev == "default" else base_rev
    objects = [webhooks.tag_configuration(tag, rev, namespace=namespace, name=name)]
    if tag == "default":
        objects.append(webhooks.default_validator(rev, namespace=namespace))
    return objects


def run_set(ctx: Context, args: argparse.Namespace) -> int:
    tag = _one_tag(args, "creation")
    client = ctx.client()
    objects = _generate(client, tag, args.revision, overwrite=args.overwrite, generate=False,
                        name=args.webhook_name, namespace=ctx.istio_namespace)
    try:
        # --overwrite replaces the tag's objects whole (istioctl deletes the old tag webhooks and
        # creates new ones), so labels of an install-made tag do not linger (reference §3).
        for conf in client.list(MWC_PATH, label_selector=f"istio.io/tag={tag}"):
            client.delete(f"{MWC_PATH}/{conf['metadata']['name']}")
        if tag == "default":
            client.delete(f"{VWC_PATH}/{webhooks.DEFAULT_VALIDATOR}")
        client.delete(f"/api/v1/namespaces/{ctx.istio_namespace}/services/istiod-revision-tag-{tag}")
        for obj in objects:
            client.apply(obj)
        rev = webhooks.configuration_revision(objects[0])
        client.apply(webhooks.tag_service(tag, "" if rev == "default" else rev, ctx.istio_namespace))
        if tag == "default":
            _deactivate_unrevisioned_injector(client)
    except KubeError as e:
        raise CommandError(f"failed to apply tag webhook MutatingWebhookConfiguration to cluster: {e.message}") from e
    print(TAG_CREATED.format(tag=tag, rev=args.revision))
    return 0


def _deactivate_unrevisioned_injector(client: Client) -> None:
    """Keep the old default injector but make it match nothing, so the tag decides (DeactivateIstioInjectionWebhook)."""
    found = client.list(MWC_PATH, label_selector="istio.io/rev=default,!istio.io/tag")
    if len(found) > 1:
        raise CommandError("expected a single webhook for default revision")
    for conf in found:
        client.replace(f"{MWC_PATH}/{conf['metadata']['name']}", webhooks.deactivate(conf))


def run_generate(ctx: Context, args: argparse.Namespace) -> int:
    tag = _one_tag(args, "creation")
    objects = _generate(ctx.client(), tag, args.revision, overwrite=args.overwrite, generate=True,
                        name=args.webhook_name, namespace=ctx.istio_namespace)
    print(to_yaml(objects), end="")
    return 0


def _namespaces_with(client: Client, tag: str) -> list[str]:
    return sorted(n["metadata"]["name"] for n in client.list("/api/v1/namespaces", label_selector=f"istio.io/rev={tag}"))


def run_list(ctx: Context, args: argparse.Namespace) -> int:
    if args.extra:
        raise UsageError("tag list command does not accept arguments")
    client = ctx.client()
    confs = client.list(MWC_PATH, label_selector="istio.io/rev")
    if not confs:
        print("No Istio revision tag MutatingWebhookConfigurations to list")
        return 0
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for conf in confs:
        tag = webhooks.configuration_tag(conf)
        rev = webhooks.configuration_revision(conf)
        rows[(rev, tag)] = {"tag": tag, "revision": rev, "namespaces": _namespaces_with(client, tag) if tag else []}
    # A revision that has a tag is listed through its tags only.
    for rev, tag in list(rows):
        if tag:
            rows.pop((rev, ""), None)
    tags = sorted(rows.values(), key=lambda d: (d["revision"], d["tag"]))
    if args.output in ("json", "yaml"):
        text = go_json(tags, indent="\t")
        print(text if args.output == "json" else go_yaml(tags))
        return 0
    if args.output != "table":
        raise CommandError(f"unknown format: {args.output}")
    table = [["TAG", "REVISION", "NAMESPACES"]] + [[t["tag"], t["revision"], ",".join(t["namespaces"])] for t in tags]
    print(tabwrite(table, padding=1), end="")
    return 0


def run_remove(ctx: Context, args: argparse.Namespace) -> int:
    tag = _one_tag(args, "removal")
    client = ctx.client()
    confs = client.list(MWC_PATH, label_selector=f"istio.io/tag={tag}")
    if not confs:
        raise CommandError(f'cannot remove tag "{tag}": cannot find MutatingWebhookConfiguration for tag')
    namespaces = _namespaces_with(client, tag)
    if namespaces and not args.skip_confirmation:
        question = (f'Caution, found {len(namespaces)} namespace(s) still injected by tag "{tag}": '
                    + " ".join(namespaces) + "\nProceed with operation? [y/N]")
        if not confirm(question):
            print("Aborting operation.")
            return 0
    for conf in confs:
        client.delete(f"{MWC_PATH}/{conf['metadata']['name']}")
    # Only the mutating configurations go: `istiod-default-validator` lingers (istio/istio#60537).
    client.delete(f"/api/v1/namespaces/{ctx.istio_namespace}/services/istiod-revision-tag-{tag}")
    print(f"Revision tag {tag} removed")
    return 0
