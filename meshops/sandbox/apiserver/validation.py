"""Object validation: the checks whose failures clients meet in practice, as 422 Invalid.

Messages follow ``k8s.io/apimachinery/pkg/util/validation/field``: ``spec.replicas: Invalid
value: -1: must be greater than or equal to 0``, with a cause naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import errors
from .errors import ApiError
from .selectors import labels_match, requirements_from_label_selector

Obj = dict[str, Any]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Names that must be DNS labels (no dots) rather than subdomains.
_LABEL_NAMED_KINDS = {"Namespace", "Service"}


class FieldErrors:
    def __init__(self) -> None:
        self.causes: list[tuple[str, str, str]] = []

    def required(self, field: str, detail: str = "") -> None:
        self.causes.append((field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else "")))

    def invalid(self, field: str, value: Any, detail: str) -> None:
        shown = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
        self.causes.append((field, "FieldValueInvalid", f"Invalid value: {shown}: {detail}"))

    def unsupported(self, field: str, value: Any, allowed: list[str]) -> None:
        options = ", ".join(f'"{a}"' for a in allowed)
        self.causes.append((field, "FieldValueNotSupported", f'Unsupported value: "{value}": supported values: {options}'))

    def duplicate(self, field: str, value: Any) -> None:
        self.causes.append((field, "FieldValueDuplicate", f'Duplicate value: "{value}"'))

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append((field, "FieldValueForbidden", f"Forbidden: {detail}"))

    def raise_if_any(self, kind: str, group: str, name: str) -> None:
        if self.causes:
            raise errors.invalid(kind, group, name, self.causes)


def _check_int(errs: FieldErrors, field: str, value: Any, minimum: int | None = 0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        errs.invalid(field, value, "must be an integer")
    elif minimum is not None and value < minimum:
        errs.invalid(field, value, f"must be greater than or equal to {minimum}")


def _check_labels(errs: FieldErrors, field: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        errs.invalid(field, labels, "must be a map of string keys to string values")
        return
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not name or len(name) > 63 or not _LABEL_NAME.match(name) or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            errs.invalid(f"{field}", key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
        if not isinstance(value, str):
            errs.invalid(f"{field}.{key}", value, "must be a string")
        elif len(value) > 63 or not _LABEL_VALUE.match(value):
            errs.invalid(f"{field}", value, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")


def validate_metadata(kind: str, obj: Obj, errs: FieldErrors) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        errs.required("metadata.name", "name or generateName is required")
    elif not isinstance(name, str):
        errs.invalid("metadata.name", name, "must be a string")
    elif kind in _LABEL_NAMED_KINDS:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            errs.invalid(
                "metadata.name", name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character",
            )
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errs.invalid(
            "metadata.name", name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character",
        )
    _check_labels(errs, "metadata.labels", meta.get("labels"))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            errs.invalid("metadata.annotations", annotations, "must be a map of string keys to string values")
        elif sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
            errs.invalid("metadata.annotations", "<too long>", "Too long: must have at most 262144 bytes")


def _validate_containers(errs: FieldErrors, field: str, containers: Any, *, required: bool) -> None:
    if not containers:
        if required:
            errs.required(field)
        return
    if not isinstance(containers, list):
        errs.invalid(field, containers, "must be a list of containers")
        return
    seen: set[str] = set()
    for i, c in enumerate(containers):
        path = f"{field}[{i}]"
        if not isinstance(c, dict):
            errs.invalid(path, c, "must be an object")
            continue
        name = c.get("name")
        if not name:
            errs.required(f"{path}.name")
        elif not isinstance(name, str) or not _DNS_LABEL.match(name):
            errs.invalid(f"{path}.name", name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'")
        elif name in seen:
            errs.duplicate(f"{path}.name", name)
        else:
            seen.add(name)
        if not c.get("image"):
            errs.required(f"{path}.image")
        for j, port in enumerate(c.get("ports") or []):
            value = port.get("containerPort") if isinstance(port, dict) else None
            if value is None:
                errs.required(f"{path}.ports[{j}].containerPort")
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                errs.invalid(f"{path}.ports[{j}].containerPort", value, "must be between 1 and 65535, inclusive")


def validate_pod_spec(errs: FieldErrors, field: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        errs.required(field)
        return
    _validate_containers(errs, f"{field}.containers", spec.get("containers"), required=True)
    _validate_containers(errs, f"{field}.initContainers", spec.get("initContainers"), required=False)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in ("Always", "OnFailure", "Never"):
        errs.unsupported(f"{field}.restartPolicy", policy, ["Always", "OnFailure", "Never"])


def _validate_workload(kind: str, obj: Obj, errs: FieldErrors) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    _check_int(errs, "spec.replicas", spec.get("replicas"))
    selector = spec.get("selector")
    template = spec.get("template")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errs.required("spec.selector")
    if not isinstance(template, dict):
        errs.required("spec.template")
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    _check_labels(errs, "spec.template.metadata.labels", labels)
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        try:
            reqs = requirements_from_label_selector(selector) or []
        except ApiError:
            errs.invalid("spec.selector", selector, "invalid label selector")
        else:
            if not labels_match(labels, reqs):
                errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    validate_pod_spec(errs, "spec.template.spec", template.get("spec"))
    if kind == "Deployment":
        strategy = spec.get("strategy") or {}
        stype = strategy.get("type", "RollingUpdate")
        if stype not in ("RollingUpdate", "Recreate"):
            errs.unsupported("spec.strategy.type", stype, ["Recreate", "RollingUpdate"])
        elif stype == "Recreate" and strategy.get("rollingUpdate"):
            errs.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
        ru = strategy.get("rollingUpdate") or {}
        if stype == "RollingUpdate" and str(ru.get("maxSurge", "25%")) in ("0", "0%") and str(
            ru.get("maxUnavailable", "25%")
        ) in ("0", "0%"):
            errs.invalid("spec.strategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"), "may not be 0 when `maxSurge` is 0")
        _check_int(errs, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
        _check_int(errs, "spec.minReadySeconds", spec.get("minReadySeconds"))
    if kind == "StatefulSet":
        stype = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        if stype not in ("RollingUpdate", "OnDelete"):
            errs.unsupported("spec.updateStrategy.type", stype, ["OnDelete", "RollingUpdate"])


def _validate_service(obj: Obj, errs: FieldErrors) -> None:
    spec = obj.get("spec") or {}
    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.unsupported("spec.type", svc_type, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"])
    ports = spec.get("ports") or []
    if not ports and svc_type != "ExternalName" and spec.get("clusterIP") != "None":
        errs.required("spec.ports")
    names: set[str] = set()
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            errs.invalid(f"spec.ports[{i}]", port, "must be an object")
            continue
        value = port.get("port")
        if value is None:
            errs.required(f"spec.ports[{i}].port")
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            errs.invalid(f"spec.ports[{i}].port", value, "must be between 1 and 65535, inclusive")
        if len(ports) > 1 and not port.get("name"):
            errs.required(f"spec.ports[{i}].name")
        if port.get("name"):
            if port["name"] in names:
                errs.duplicate(f"spec.ports[{i}].name", port["name"])
            names.add(port["name"])
    if svc_type == "ExternalName" and not spec.get("externalName"):
        errs.required("spec.externalName")


# The values of data and binaryData together may hold at most MaxSecretSize = 1 MiB; a bigger
# ConfigMap is 422 Invalid with a TooLong cause on the root path (k8s.io/kubernetes
# pkg/apis/core/validation/validation.go ValidateConfigMap, core.MaxSecretSize in
# pkg/apis/core/types.go). binaryData counts decoded bytes. A body past 3 MiB never gets
# this far: http.py answers 413 (MAX_BODY).
MAX_CONFIGMAP_BYTES = 1024 * 1024


def _validate_configmap(obj: Obj, errs: FieldErrors) -> None:
    total = 0
    for field in ("data", "binaryData"):
        data = obj.get(field)
        if data is None:
            continue
        if not isinstance(data, dict):
            errs.invalid(field, data, "must be a map")
            continue
        for key, value in data.items():
            if not _CONFIG_KEY.match(key):
                errs.invalid(f"{field}[{key}]", key, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
            if not isinstance(value, str):
                errs.invalid(f"{field}[{key}]", value, "must be a string")
            elif field == "data":
                total += len(value.encode())
            else:
                total += len(value) * 3 // 4 - value.count("=")  # base64 on the wire, bytes counted
    if total > MAX_CONFIGMAP_BYTES:
        errs.causes.append(("", "FieldValueTooLong", f"Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes"))


def _validate_crd(obj: Obj, errs: FieldErrors) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group")
    if not group:
        errs.required("spec.group")
    for key in ("plural", "kind"):
        if not names.get(key):
            errs.required(f"spec.names.{key}")
    name = (obj.get("metadata") or {}).get("name")
    if group and names.get("plural") and name != f"{names['plural']}.{group}":
        errs.invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.unsupported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"])
    versions = spec.get("versions") or []
    if not versions:
        errs.required("spec.versions")
    elif sum(1 for v in versions if v.get("storage")) != 1:
        errs.invalid("spec.versions", [v.get("name") for v in versions], "must have exactly one version marked as storage version")


def _validate_job(obj: Obj, errs: FieldErrors) -> None:
    spec = obj.get("spec") or {}
    template = spec.get("template")
    if not isinstance(template, dict):
        errs.required("spec.template")
        return
    validate_pod_spec(errs, "spec.template.spec", template.get("spec"))
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        errs.unsupported("spec.template.spec.restartPolicy", policy, ["OnFailure", "Never"])
    for key in ("parallelism", "completions", "backoffLimit"):
        _check_int(errs, f"spec.{key}", spec.get(key))


def validate(kind: str, group: str, obj: Obj, *, builtin: bool = True) -> None:
    """Raise 422 Invalid naming every bad field."""
    errs = FieldErrors()
    validate_metadata(kind, obj, errs)
    if not builtin:
        pass
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        _validate_workload(kind, obj, errs)
    elif kind == "Pod":
        validate_pod_spec(errs, "spec", obj.get("spec"))
    elif kind == "Service":
        _validate_service(obj, errs)
    elif kind in ("ConfigMap", "Secret"):
        _validate_configmap(obj, errs)
    elif kind == "CustomResourceDefinition":
        _validate_crd(obj, errs)
    elif kind == "Job":
        _validate_job(obj, errs)
    elif kind == "CronJob":
        spec = obj.get("spec") or {}
        if not spec.get("schedule"):
            errs.required("spec.schedule")
        if not isinstance(spec.get("jobTemplate"), dict):
            errs.required("spec.jobTemplate")
    errs.raise_if_any(kind, group, (obj.get("metadata") or {}).get("name") or "")


# Fields that may not change once set, per kind: (path, message).
_IMMUTABLE: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "Deployment": [(("spec", "selector"), "field is immutable")],
    "ReplicaSet": [(("spec", "selector"), "field is immutable")],
    "StatefulSet": [(("spec", "selector"), "field is immutable")],
    "DaemonSet": [(("spec", "selector"), "field is immutable")],
    "Job": [(("spec", "selector"), "field is immutable"), (("spec", "template"), "field is immutable")],
    "Service": [(("spec", "clusterIP"), "field is immutable")],
    "CustomResourceDefinition": [(("spec", "scope"), "field is immutable")],
}


def validate_update(kind: str, group: str, new: Obj, old: Obj, *, builtin: bool = True) -> None:
    validate(kind, group, new, builtin=builtin)
    if not builtin:
        return
    errs = FieldErrors()
    for path, message in _IMMUTABLE.get(kind, []):
        a: Any = new
        b: Any = old
        for key in path:
            a = a.get(key) if isinstance(a, dict) else None
            b = b.get(key) if isinstance(b, dict) else None
        if b is not None and a != b:
            errs.invalid(".".join(path), a, message)
    errs.raise_if_any(kind, group, (new.get("metadata") or {}).get("name") or "")
