"""What the canary-upgrade steps share: reading the mesh, istioctl by version, tags, labels.

Reading is done in a handful of cluster-wide lists (``collect``), so discovering a mesh
of thousands of pods costs a dozen requests. Writes are small merge patches. Tags are
moved with ``istioctl tag set`` (the documented way) and put back from a backup of the
exact objects (``restore``), because putting back an unrevisioned default (whose injector
``tag set default`` deactivated) is not something istioctl does.
"""

from __future__ import annotations

import contextlib
import copy
import re
from typing import Any

from meshops.domain.errors import Conflict, NotFound, PermanentStepError, TemporaryStepError
from meshops.domain.mesh import REV_LABEL, TAG_LABEL, MeshSnapshot
from meshops.drivers.istioctl_api import IstioctlApi, IstioctlFailed
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops.context import StepContext

ADMISSION = "admissionregistration.k8s.io/v1"
MWC = "MutatingWebhookConfiguration"
VWC = "ValidatingWebhookConfiguration"
DEFAULT_VALIDATOR = "istiod-default-validator"
ISTIO_NAMESPACE = "istio-system"
# On a workload meshops restarted: which run and purpose, so a resumed run does not restart it again.
RESTARTED_BY = "meshops.dev/restarted-by"


def kube_of(ctx: StepContext) -> KubeApi:
    kube: KubeApi = ctx.drivers.kube
    return kube


# istioctl output that says the API server, not the request, was the problem: worth a retry.
# "the object has been modified" is a 409 Conflict: istioctl read an object that changed before
# its write; running the idempotent command again reads it afresh (found by bench/chaos.py).
_TRANSIENT = re.compile(r"an error on the server|the server is currently unable|too many requests|"
                        r"connection refused|connection reset|i/o timeout|context deadline exceeded|\b(429|50[0234])\b|"
                        r"the object has been modified",
                        re.IGNORECASE)


def run_istioctl(ictl: IstioctlApi, args: list[str], *, timeout: float = 600.0) -> str:
    """Run istioctl; a failure becomes a step error, temporary when the API server was at fault
    (the playbook's retries then run the idempotent command again)."""
    try:
        res = ictl.run(args, timeout=timeout)
    except IstioctlFailed as exc:
        if exc.temporary or _TRANSIENT.search(exc.result.stderr + exc.result.stdout):
            raise TemporaryStepError(exc.message, delay=2.0) from None
        raise PermanentStepError(exc.message) from None
    return res.stdout + res.stderr


# ---- reading the mesh -------------------------------------------------------------------------


def collect(kube: KubeApi, *, istio_namespace: str = ISTIO_NAMESPACE) -> MeshSnapshot:
    """One snapshot of the mesh: about ten cluster-wide lists."""
    version = kube.server_version()
    namespaces = kube.list("v1", "Namespace").items
    pods = kube.list("v1", "Pod").items
    workloads = [*kube.list("apps/v1", "Deployment").items, *kube.list("apps/v1", "StatefulSet").items,
                 *kube.list("apps/v1", "DaemonSet").items]
    mutating = kube.list(ADMISSION, MWC).items
    validating = kube.list(ADMISSION, VWC).items
    service_namespaces = {istio_namespace}
    for conf in (*mutating, *validating):
        for wh in conf.get("webhooks") or []:
            svc = (wh.get("clientConfig") or {}).get("service")
            if svc:
                service_namespaces.add(str(svc.get("namespace", "default")))
    names = {(n.get("metadata") or {}).get("name") for n in namespaces}
    services = [s for ns in sorted(service_namespaces) if ns in names for s in kube.list("v1", "Service", ns).items]
    return MeshSnapshot.from_objects(kube_version=version, namespaces=namespaces, pods=pods, workloads=workloads,
                                     mutating=mutating, validating=validating, services=services,
                                     istio_namespace=istio_namespace)


def revision_exists(kube: KubeApi, revision: str, namespace: str = ISTIO_NAMESPACE) -> bool:
    listed = kube.list("apps/v1", "Deployment", namespace, label_selector=f"app=istiod,{REV_LABEL}={revision}")
    return bool(listed.items)


# ---- namespace labels ---------------------------------------------------------------------------


def set_namespace_labels(kube: KubeApi, namespace: str, labels: dict[str, str | None]) -> bool:
    """Merge-patch only what differs; True if a patch was sent. ``None`` removes a label."""
    ns = kube.get("v1", "Namespace", namespace)
    if ns is None:
        return False
    current = (ns.get("metadata") or {}).get("labels") or {}
    change = {k: v for k, v in labels.items() if current.get(k) != v}
    if not change:
        return False
    kube.patch("v1", "Namespace", namespace, {"metadata": {"labels": change}})
    return True


# ---- tags, and putting webhooks back exactly as they were ----------------------------------------


def _clean(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    meta = out.get("metadata") or {}
    out["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    out.pop("status", None)
    return out


def _ref(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "namespace": namespace}


def tag_backup(kube: KubeApi, snap: MeshSnapshot, tags: list[str], *, istio_namespace: str = ISTIO_NAMESPACE
               ) -> list[dict[str, Any]]:
    """The objects that ``istioctl tag set`` on ``tags`` touches, as they are now, in restore order:
    injectors first (so something always injects), then tag webhooks, services, the validator."""
    refs: list[dict[str, Any]] = []
    if "default" in tags:
        # tag set default deactivates the injector that served istio-injection=enabled so far.
        for w in snap.webhooks:
            if w.injector and not w.tag and w.name.startswith("namespace."):
                refs.append(_ref(ADMISSION, MWC, w.configuration))
    for tag in tags:
        refs.append(_ref(ADMISSION, MWC, f"istio-revision-tag-{tag}"))
    for tag in tags:
        refs.append(_ref("v1", "Service", f"istiod-revision-tag-{tag}", istio_namespace))
    if "default" in tags:
        refs.append(_ref(ADMISSION, VWC, DEFAULT_VALIDATOR))
    out = []
    seen: set[tuple[str, str]] = set()
    for ref in refs:
        if (ref["kind"], ref["name"]) in seen:
            continue
        seen.add((ref["kind"], ref["name"]))
        obj = kube.get(ref["apiVersion"], ref["kind"], ref["name"], ref["namespace"])
        out.append({"ref": ref, "object": _clean(obj) if obj is not None else None})
    return out


# What tag_backup and gateway_backup record, and so all restore() may touch. A backup arrives
# through the journal, which may have come from a ConfigMap anyone with write access to
# meshops-system can edit: restoring whatever it names would lend them meshops' own RBAC.
# Webhook configurations (cluster-wide) only by Istio's names; the gateway kinds only in a
# namespace. Never RBAC, Secrets or anything else.
_RESTORABLE: dict[tuple[str, str], tuple[str, ...] | None] = {
    (ADMISSION, MWC): ("istio-", "namespace."),
    (ADMISSION, VWC): ("istiod-", "istio-"),
    ("v1", "Service"): None,
    ("apps/v1", "Deployment"): None,
    ("v1", "ServiceAccount"): None,
    ("policy/v1", "PodDisruptionBudget"): None,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): None,
}


def _check_restorable(entry: Any, istio_namespace: str | None) -> None:
    ref = entry.get("ref") if isinstance(entry, dict) else None
    want = entry.get("object") if isinstance(entry, dict) else None
    if not isinstance(ref, dict):
        raise PermanentStepError(f"refusing to restore a backup entry without a ref: {entry!r:.200}")
    key = (str(ref.get("apiVersion")), str(ref.get("kind")))
    name, namespace = str(ref.get("name") or ""), ref.get("namespace")
    ok = key in _RESTORABLE and bool(name)
    if ok:
        prefixes = _RESTORABLE[key]
        ok = name.startswith(prefixes) if prefixes is not None else bool(namespace)
    if ok and want is not None:
        meta = (want.get("metadata") or {}) if isinstance(want, dict) else {}
        ok = (isinstance(want, dict) and (want.get("apiVersion"), want.get("kind")) == key
              and meta.get("name") == name and meta.get("namespace") == namespace)
    if not ok:
        raise PermanentStepError(f"refusing to restore {ref.get('kind')} {namespace or ''}/{name}: not something "
                                 "meshops backs up (the journal's backup may have been altered)")


def restore(kube: KubeApi, backup: list[dict[str, Any]], *, istio_namespace: str | None = None) -> list[str]:
    """Make each backed-up object exactly what it was (absent ones deleted). Idempotent.

    Every entry is checked first (kinds and names tag_backup records, object matching its ref),
    so a tampered backup changes nothing at all.
    """
    for entry in backup:
        _check_restorable(entry, istio_namespace)
    changed = []
    for entry in backup:
        ref, want = entry["ref"], entry.get("object")
        current = kube.get(ref["apiVersion"], ref["kind"], ref["name"], ref.get("namespace"))
        label = f"{ref['kind']}/{ref['name']}"
        if want is None:
            if current is not None:
                kube.delete(ref["apiVersion"], ref["kind"], ref["name"], ref.get("namespace"))
                changed.append(f"deleted {label}")
            continue
        if current is None:
            new = _clean(want)
            if ref["kind"] == "Service":
                for f in ("clusterIP", "clusterIPs"):
                    (new.get("spec") or {}).pop(f, None)
            kube.create(new)
            changed.append(f"created {label}")
            continue
        if _same(current, want):
            continue
        new = _clean(want)
        new["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        if ref["kind"] == "Service":
            new.setdefault("spec", {})
            for f in ("clusterIP", "clusterIPs"):
                if f in (current.get("spec") or {}):
                    new["spec"][f] = current["spec"][f]
        try:
            kube.replace(new)
        except Conflict:
            kube.replace({**new, "metadata": {**new["metadata"], "resourceVersion": None}})
        changed.append(f"restored {label}")
    return changed


def _same(current: Obj, want: Obj) -> bool:
    cur = _clean(current)
    wanted = _clean(want)
    return all(cur.get(k) == wanted.get(k) for k in ("metadata", "webhooks", "spec"))


def retarget_tags(ctx: StepContext, ictl: IstioctlApi, kube: KubeApi, flips: dict[str, str]) -> list[str]:
    """``istioctl tag set T --revision R --overwrite`` for each tag not already serving R."""
    done: list[str] = []
    if not flips:
        return done
    snap_tags = _current_tags(kube)
    for tag, revision in sorted(flips.items()):
        ctx.check()
        if snap_tags.get(tag) == revision:
            continue
        run_istioctl(ictl, ["tag", "set", tag, "--revision", revision, "--overwrite", "-y"],
                     timeout=ctx.wait_budget(300))
        done.append(tag)
        ctx.log.info("tag.set", tag=tag, revision=revision)
    if "default" in flips:
        _ensure_default_validator(kube, flips["default"])
    return done


def _current_tags(kube: KubeApi) -> dict[str, str]:
    out = {}
    for conf in kube.list(ADMISSION, MWC, label_selector=TAG_LABEL).items:
        labels = (conf.get("metadata") or {}).get("labels") or {}
        out[labels[TAG_LABEL]] = labels.get(REV_LABEL, "")
    return out


def _ensure_default_validator(kube: KubeApi, revision: str, namespace: str = ISTIO_NAMESPACE) -> None:
    """istio/istio#32143: the validator may stay on the old revision; point it at ``revision``."""
    vwc = kube.get(ADMISSION, VWC, DEFAULT_VALIDATOR)
    if vwc is None:
        return
    service = "istiod" if revision == "default" else f"istiod-{revision}"
    hooks = vwc.get("webhooks") or []
    if all(((h.get("clientConfig") or {}).get("service") or {}).get("name") in (service, "istiod-revision-tag-default")
           for h in hooks):
        return
    for h in hooks:
        svc = (h.get("clientConfig") or {}).get("service")
        if svc is not None:
            svc["name"], svc["namespace"] = service, namespace
    vwc["metadata"].setdefault("labels", {})[REV_LABEL] = revision
    # Changed under us (by istioctl): the finalize check looks again.
    with contextlib.suppress(Conflict, NotFound):
        kube.replace(vwc)
