"""The admission webhook configurations Istio installs, rendered as Kubernetes objects.

Shapes follow the istio-discovery chart (`mutatingwebhook.yaml`, `revision-tags.yaml`,
`validatingwebhookconfiguration.yaml`) and istioctl's tag generator. The selectors are the
whole of Istio's injection precedence: the API server only evaluates them, so the
sandbox gets "istio-injection beats istio.io/rev" and friends by rendering them exactly.
"""

from __future__ import annotations

from typing import Any

from meshops.sandbox.istio.versions import istiod_service_name

Obj = dict[str, Any]

ISTIO_NAMESPACE = "istio-system"
INJECTOR_SUFFIX = "sidecar-injector.istio.io"
VALIDATOR_SUFFIX = "validation.istio.io"
DEFAULT_VALIDATOR = "istiod-default-validator"

# istioctl's `util.NeverMatch`: how `tag set default` disables the old default injector
# without deleting it (so the user can switch back).
NEVER_MATCH: Obj = {"matchLabels": {"istio.io/deactivated": "never-match"}}

_NOT_OPTED_OUT: Obj = {
    "matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]
}


def _rev_label(revision: str) -> str:
    return revision or "default"


def injector_configuration_name(revision: str, namespace: str = ISTIO_NAMESPACE) -> str:
    base = "istio-sidecar-injector" + (f"-{revision}" if revision not in ("", "default") else "")
    return base if namespace == ISTIO_NAMESPACE else f"{base}-{namespace}"


def revision_validator_name(revision: str, namespace: str = ISTIO_NAMESPACE) -> str:
    suffix = f"-{revision}" if revision not in ("", "default") else ""
    return f"istio-validator{suffix}-{namespace}"


def tag_configuration_name(tag: str, namespace: str = ISTIO_NAMESPACE) -> str:
    return f"istio-revision-tag-{tag}" if namespace == ISTIO_NAMESPACE else f"istio-revision-tag-{tag}-{namespace}"


def _injection_webhook(prefix: str, revision: str, namespace: str, ns_sel: Obj, obj_sel: Obj) -> Obj:
    return {
        "name": f"{prefix}{INJECTOR_SUFFIX}",
        "clientConfig": {
            "service": {
                "name": istiod_service_name(revision),
                "namespace": namespace,
                "path": "/inject",
                "port": 443,
            },
        },
        "sideEffects": "None",
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "failurePolicy": "Fail",
        "reinvocationPolicy": "Never",
        "admissionReviewVersions": ["v1"],
        "namespaceSelector": ns_sel,
        "objectSelector": obj_sel,
    }


def _revision_webhooks(selector_value: str, revision: str, namespace: str) -> list[Obj]:
    """`rev.namespace.` and `rev.object.`: a namespace or pod labelled istio.io/rev=<value>."""
    return [
        _injection_webhook(
            "rev.namespace.", revision, namespace,
            {"matchExpressions": [
                {"key": "istio.io/rev", "operator": "In", "values": [selector_value]},
                # The legacy label takes precedence: a namespace carrying both is left to it.
                {"key": "istio-injection", "operator": "DoesNotExist"},
            ]},
            _NOT_OPTED_OUT,
        ),
        _injection_webhook(
            "rev.object.", revision, namespace,
            {"matchExpressions": [
                # The namespace label beats the pod label (istio/istio#48316).
                {"key": "istio.io/rev", "operator": "DoesNotExist"},
                {"key": "istio-injection", "operator": "DoesNotExist"},
            ]},
            {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]},
                {"key": "istio.io/rev", "operator": "In", "values": [selector_value]},
            ]},
        ),
    ]


def _default_webhooks(revision: str, namespace: str) -> list[Obj]:
    """`namespace.` and `object.`: what only the default revision answers."""
    return [
        _injection_webhook(
            "namespace.", revision, namespace,
            {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]},
            _NOT_OPTED_OUT,
        ),
        _injection_webhook(
            "object.", revision, namespace,
            {"matchExpressions": [
                {"key": "istio-injection", "operator": "DoesNotExist"},
                {"key": "istio.io/rev", "operator": "DoesNotExist"},
            ]},
            {"matchExpressions": [
                {"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]},
                {"key": "istio.io/rev", "operator": "DoesNotExist"},
            ]},
        ),
    ]


def _owner_labels(revision: str, owner: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "install.operator.istio.io/owning-resource": owner,
        "operator.istio.io/component": "Pilot",
        **(extra or {}),
        "istio.io/rev": _rev_label(revision),
        "app": "sidecar-injector",
        "release": "istio",
    }


def strip_operator_labels(labels: dict[str, str]) -> dict[str, str]:
    """`tag set` drops every label containing operator.istio.io, so `uninstall` (which selects on
    operator.istio.io/component) leaves user-made tags alone (reference §3, §4)."""
    return {k: v for k, v in labels.items() if "operator.istio.io" not in k}


def injector_configuration(revision: str, *, owner: str = "unknown", namespace: str = ISTIO_NAMESPACE,
                           labels: dict[str, str] | None = None) -> Obj:
    """The per-revision MutatingWebhookConfiguration `istio-sidecar-injector[-<rev>]`."""
    webhooks = _revision_webhooks(_rev_label(revision), revision, namespace)
    if revision in ("", "default"):
        webhooks += _default_webhooks(revision, namespace)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": injector_configuration_name(revision, namespace),
                     "labels": _owner_labels(revision, owner, labels)},
        "webhooks": webhooks,
    }


def tag_configuration(tag: str, revision: str, *, namespace: str = ISTIO_NAMESPACE, name: str = "",
                      by_install: bool = False) -> Obj:
    """`istio-revision-tag-<tag>`: the revision's webhooks answering to istio.io/rev=<tag>.

    `by_install`: the default tag istioctl install applies as a side effect keeps
    `operator.istio.io/component=Pilot` plus `owning-resource-not-pruned=true`; a tag made by
    `tag set` has every operator.istio.io label stripped (reference §1, §3).
    """
    webhooks = _revision_webhooks(tag, revision, namespace)
    if tag == "default":
        webhooks += _default_webhooks(revision, namespace)
    labels = _owner_labels(revision, "unknown")
    if by_install:
        labels["install.operator.istio.io/owning-resource-not-pruned"] = "true"
    else:
        labels = strip_operator_labels(labels)
    labels["istio.io/tag"] = tag
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name or tag_configuration_name(tag, namespace), "labels": labels},
        "webhooks": webhooks,
    }


def tag_service(tag: str, revision: str, namespace: str = ISTIO_NAMESPACE, *, by_install: bool = False) -> Obj:
    """Service `istiod-revision-tag-<tag>` selecting the revision's istiod. Installs create the
    default one beside the default tag (seen in `istioctl install` output and in the purge code
    that deletes it); like the tag MWC, only the install-made one keeps the operator labels."""
    labels = {"app": "istiod", "istio.io/rev": _rev_label(revision), "istio.io/tag": tag}
    if by_install:
        labels.update({"operator.istio.io/component": "Pilot",
                       "install.operator.istio.io/owning-resource-not-pruned": "true"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"istiod-revision-tag-{tag}",
            "namespace": namespace,
            "labels": labels,
        },
        "spec": {
            "selector": {"app": "istiod", "istio.io/rev": _rev_label(revision)},
            "ports": _ISTIOD_PORTS,
        },
    }


_VALIDATED_GROUPS = ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"]


def _validation_webhook(name: str, revision: str, namespace: str, obj_sel: Obj) -> Obj:
    return {
        "name": name,
        "clientConfig": {
            "service": {"name": istiod_service_name(revision), "namespace": namespace, "path": "/validate", "port": 443},
        },
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": _VALIDATED_GROUPS,
                   "apiVersions": ["*"], "resources": ["*"]}],
        # The chart ships `Ignore` and istiod flips it to `Fail` once its endpoint is ready;
        # the sandbox has no istiod process, so it writes the steady state directly.
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "objectSelector": obj_sel,
    }


def revision_validator(revision: str, *, owner: str = "unknown", namespace: str = ISTIO_NAMESPACE,
                       labels: dict[str, str] | None = None) -> Obj:
    """`istio-validator[-<rev>]-istio-system`: validates objects labelled istio.io/rev=<rev>."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": revision_validator_name(revision, namespace),
            "labels": {"install.operator.istio.io/owning-resource": owner,
                       "operator.istio.io/component": "Pilot", **(labels or {}),
                       "app": "istiod", "istio": "istiod", "release": "istio",
                       "istio.io/rev": _rev_label(revision)},
        },
        "webhooks": [_validation_webhook(
            f"rev.{VALIDATOR_SUFFIX}", revision, namespace,
            {"matchExpressions": [{"key": "istio.io/rev", "operator": "In", "values": [_rev_label(revision)]}]},
        )],
    }


def default_validator(revision: str, namespace: str = ISTIO_NAMESPACE, *, by_install: bool = False) -> Obj:
    """`istiod-default-validator`: the default revision validates every unlabelled Istio object."""
    labels = {"app": "istiod", "istio": "istiod", "istio.io/rev": _rev_label(revision), "istio.io/tag": "default"}
    if by_install:
        labels.update({"operator.istio.io/component": "Pilot",
                       "install.operator.istio.io/owning-resource-not-pruned": "true"})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": DEFAULT_VALIDATOR,
            "labels": labels,
        },
        "webhooks": [_validation_webhook(
            VALIDATOR_SUFFIX, revision, namespace,
            {"matchExpressions": [{"key": "istio.io/rev", "operator": "DoesNotExist"}]},
        )],
    }


_ISTIOD_PORTS: list[Obj] = [
    {"name": "grpc-xds", "port": 15010, "protocol": "TCP", "targetPort": 15010},
    {"name": "https-dns", "port": 15012, "protocol": "TCP", "targetPort": 15012},
    {"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017},
    {"name": "http-monitoring", "port": 15014, "protocol": "TCP", "targetPort": 15014},
]


def istiod_ports() -> list[Obj]:
    return [dict(p) for p in _ISTIOD_PORTS]


# --- reading webhook configurations back --------------------------------------------------


def service_ref(webhook: Obj) -> tuple[str, str] | None:
    svc = (webhook.get("clientConfig") or {}).get("service")
    if not svc:
        return None
    return svc.get("namespace", "default"), svc.get("name", "")


def webhook_url(webhook: Obj, operation_path: str = "") -> str:
    """How the API server names the endpoint in its errors: https://<svc>.<ns>.svc:443/<path>?timeout=10s."""
    cc = webhook.get("clientConfig") or {}
    if cc.get("url"):
        return str(cc["url"])
    svc = cc.get("service") or {}
    path = svc.get("path", operation_path) or ""
    timeout = webhook.get("timeoutSeconds", 10)
    return f"https://{svc.get('name')}.{svc.get('namespace')}.svc:{svc.get('port', 443)}{path}?timeout={timeout}s"


def rule_matches(webhook: Obj, operation: str, group: str, version: str, resource: str) -> bool:
    for rule in webhook.get("rules") or []:
        ops = rule.get("operations") or []
        if "*" not in ops and operation not in ops:
            continue
        if not _listed(rule.get("apiGroups"), group):
            continue
        if not _listed(rule.get("apiVersions"), version):
            continue
        if not _listed(rule.get("resources"), resource):
            continue
        return True
    return False


def _listed(values: list[str] | None, value: str) -> bool:
    return bool(values) and ("*" in values or value in values)


def configuration_revision(configuration: Obj) -> str:
    return ((configuration.get("metadata") or {}).get("labels") or {}).get("istio.io/rev", "")


def configuration_tag(configuration: Obj) -> str:
    return ((configuration.get("metadata") or {}).get("labels") or {}).get("istio.io/tag", "")


def is_istio_injector(webhook: Obj) -> bool:
    return str(webhook.get("name", "")).endswith(INJECTOR_SUFFIX)


def is_istio_validator(webhook: Obj) -> bool:
    return str(webhook.get("name", "")).endswith(VALIDATOR_SUFFIX)


def deactivate(configuration: Obj) -> Obj:
    """What `tag set default` does to the old unrevisioned injector: never match, keep the object."""
    for wh in configuration.get("webhooks") or []:
        wh["namespaceSelector"] = NEVER_MATCH
        wh["objectSelector"] = NEVER_MATCH
    return configuration
