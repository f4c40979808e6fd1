"""OpenAPI definitions of the built-in kinds, and checking request bodies against them.

The definitions are derived once per process from the models of the official ``kubernetes``
Python client (field names, types, descriptions, required fields), named as in the Kubernetes
OpenAPI (``io.k8s.api.apps.v1.Deployment``) with the help of the protobuf tables, and
annotated with the patch merge keys from ``patching.MERGE_TYPES``. They drive ``/openapi/v2``,
``/openapi/v3``, ``kubectl explain`` and field validation: type errors answer 400 naming the
field, unknown fields are dropped, warned about or refused per ``fieldValidation``.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from .kinds import BUILTIN_TYPES, ResourceType
from .patching import MERGE_TYPES, PRIMITIVE, RETAIN_KEYS

Obj = dict[str, Any]

REF_PREFIX = "#/definitions/"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_GROUP_PREFIXES = {
    "Core": "io.k8s.api.core",
    "Discovery": "io.k8s.api.discovery",
    "Events": "io.k8s.api.events",
    "Apiextensions": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
    "Admissionregistration": "io.k8s.api.admissionregistration",
    "Storage": "io.k8s.api.storage",
    "Flowcontrol": "io.k8s.api.flowcontrol",
    "Rbac": "io.k8s.api.rbac",
    "Networking": "io.k8s.api.networking",
    "Authentication": "io.k8s.api.authentication",
    "Resource": "io.k8s.api.resource",
}
_CLASS_NAME = re.compile(r"^(?P<group>[A-Z][a-z]+)?(?P<version>V\d+(?:(?:alpha|beta)\d+)?)(?P<kind>[A-Z]\w*)$")
_APIEXTENSIONS = re.compile(r"^(CustomResource\w*|JSONSchemaProps\w*|ExternalDocumentation|ValidationRule|SelectableField|WebhookConversion)$")
# Meta kinds the clients look up by group/version/kind too.
_EXTRA_GVKS = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status": [{"group": "", "kind": "Status", "version": "v1"}],
    "io.k8s.api.autoscaling.v1.Scale": [{"group": "autoscaling", "kind": "Scale", "version": "v1"}],
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions": [
        {"group": g, "kind": "DeleteOptions", "version": "v1"}
        for g in ("", "apps", "batch", "policy", "autoscaling", "coordination.k8s.io", "discovery.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io")
    ],
}


def _proto_names() -> dict[str, list[str]]:
    """"v1.Deployment" -> ["io.k8s.api.apps.v1.Deployment"], from the protobuf tables."""
    from .protobuf import _load

    out: dict[str, list[str]] = {}
    for message in _load():
        parts = message.split(".")
        if len(parts) < 3 or not re.match(r"^v\d", parts[-2]):
            continue  # nested map-entry messages (ObjectMeta.LabelsEntry) are not types
        out.setdefault(f"{parts[-2]}.{parts[-1]}", []).append("io.k8s." + message.removeprefix("k8s.io."))
    return out


class Definitions:
    """All definitions reachable from the built-in kinds; built lazily, once per process."""

    _instance: Definitions | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Definitions:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        import kubernetes.client.models as models  # heavy: only when a schema is first needed

        self._models = models
        self._proto = _proto_names()
        from .protobuf import _load

        self._proto_fields = _load()
        self.definitions: dict[str, Obj] = {}
        self.by_gvk: dict[tuple[str, str, str], str] = {}
        self._names: dict[str, str] = {}
        for t in BUILTIN_TYPES:
            for kind in (t.kind, f"{t.kind}List"):
                cls_name = self._class_for(t, kind)
                if cls_name is None:
                    continue
                name = self._build(cls_name)
                gvk = {"group": t.group, "kind": kind, "version": t.version}
                self.definitions[name].setdefault("x-kubernetes-group-version-kind", []).append(gvk)
                self.by_gvk[(t.group, t.version, kind)] = name
        for cls_name in ("V1Scale", "V1Status", "V1DeleteOptions"):
            self._build(cls_name)
        for name, gvks in _EXTRA_GVKS.items():
            if name in self.definitions:
                self.definitions[name]["x-kubernetes-group-version-kind"] = gvks
                for gvk in gvks:
                    self.by_gvk[(gvk["group"], gvk["version"], gvk["kind"])] = name
        self.definitions[INT_OR_STRING] = {
            "description": "IntOrString is a type that can hold an int32 or a string.",
            "type": "string",
            "format": "int-or-string",
        }

    def _class_for(self, t: ResourceType, kind: str) -> str | None:
        version = t.version.capitalize()
        group_prefix = (t.group.split(".")[0] or "core").capitalize()
        for candidate in (f"{version}{kind}", f"{group_prefix}{version}{kind}"):
            if hasattr(self._models, candidate):
                return candidate
        return None

    def definition_name(self, cls_name: str) -> str:
        cached = self._names.get(cls_name)
        if cached:
            return cached
        m = _CLASS_NAME.match(cls_name)
        if m is None:
            name = f"io.k8s.unknown.{cls_name}"
        else:
            group, version, kind = m.group("group"), m.group("version").lower(), m.group("kind")
            if group and group in _GROUP_PREFIXES:
                name = f"{_GROUP_PREFIXES[group]}.{version}.{kind}"
            elif candidates := self._proto.get(f"{version}.{kind}"):
                name = sorted(candidates, key=lambda n: (".meta." not in n, n))[0]
            elif version == "v2" and not group:
                # The client's only bare V2* models are autoscaling/v2 (HorizontalPodAutoscaler...).
                name = f"io.k8s.api.autoscaling.v2.{kind}"
            elif _APIEXTENSIONS.match(kind):
                name = f"{_GROUP_PREFIXES['Apiextensions']}.{version}.{kind}"
            else:
                # Newer than our protobuf tables: nearly always a core type (pod fields).
                name = f"io.k8s.api.{(group or 'core').lower()}.{version}.{kind}"
        self._names[cls_name] = name
        return name

    def _build(self, cls_name: str) -> str:
        name = self.definition_name(cls_name)
        if name in self.definitions:
            return name
        cls = getattr(self._models, cls_name)
        definition: Obj = {"type": "object"}
        self.definitions[name] = definition  # before recursing: types refer to themselves
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].strip()
        if doc:
            definition["description"] = " ".join(doc.split())
        proto = self._proto_fields.get("k8s.io." + name.removeprefix("io.k8s."), {}).get("fields", {})
        proto_types = {spec[0]: spec[3] for spec in proto.values()}
        short = name.rsplit(".", 1)[-1]
        merge = MERGE_TYPES.get(short, {})
        properties: Obj = {}
        required = []
        for attr, type_text in cls.openapi_types.items():
            json_name = cls.attribute_map.get(attr, attr)
            field = cls.model_fields.get(attr)
            schema = self._schema_for(type_text, proto_types.get(json_name, ""))
            description = getattr(field, "description", None)
            if description:
                schema = {**schema, "description": description}
            merge_key = merge.get(json_name, (None, None))[1]
            if merge_key is not None and schema.get("type") == "array":
                strategy = "merge,retainKeys" if (short, json_name) in RETAIN_KEYS else "merge"
                schema["x-kubernetes-patch-strategy"] = strategy
                if merge_key != PRIMITIVE:
                    schema["x-kubernetes-patch-merge-key"] = merge_key
                    schema["x-kubernetes-list-type"] = "map"
                    schema["x-kubernetes-list-map-keys"] = [merge_key]
                else:
                    schema["x-kubernetes-list-type"] = "set"
            elif (short, json_name) in RETAIN_KEYS:
                schema["x-kubernetes-patch-strategy"] = "retainKeys"
            properties[json_name] = schema
            if field is not None and field.is_required():
                required.append(json_name)
        if properties:
            definition["properties"] = properties
        if required:
            definition["required"] = required
        return name

    def _schema_for(self, type_text: str, proto_type: str) -> Obj:
        text = type_text.strip()
        if text.startswith("List[") and text.endswith("]"):
            return {"type": "array", "items": self._schema_for(text[5:-1], "")}
        if text.startswith("Dict[") and text.endswith("]"):
            value = text[5:-1].split(",", 1)[1].strip()
            return {"type": "object", "additionalProperties": self._schema_for(value, "")}
        simple = {
            "str": {"type": "string"},
            "int": {"type": "integer", "format": "int32"},
            "bool": {"type": "boolean"},
            "float": {"type": "number", "format": "double"},
            "datetime": {"type": "string", "format": "date-time"},
            "date": {"type": "string", "format": "date"},
            "bytes": {"type": "string", "format": "byte"},
        }
        if text in simple:
            return dict(simple[text])
        if text == "object":
            if proto_type.endswith("intstr.IntOrString"):
                return {"$ref": REF_PREFIX + INT_OR_STRING}
            return {"x-kubernetes-preserve-unknown-fields": True}  # any JSON value (RawExtension, JSON)
        if hasattr(self._models, text):
            return {"$ref": REF_PREFIX + self._build(text)}
        return {}

    # ---- checking objects ----------------------------------------------------------------------

    def resolve(self, schema: Obj) -> Obj:
        ref = schema.get("$ref")
        while ref:
            schema = self.definitions.get(ref.removeprefix(REF_PREFIX), {})
            ref = schema.get("$ref")
        return schema


class FieldProblems:
    def __init__(self) -> None:
        self.unknown: list[str] = []
        self.type_errors: list[tuple[str, str, str]] = []  # (path, expected, got)


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object", type(None): "null"}


def check(value: Any, schema: Obj, defs: Definitions, path: str, problems: FieldProblems, *, prune: bool) -> Any:
    """Walk ``value`` against ``schema``: collect unknown fields (dropped if ``prune``) and type errors."""
    schema = defs.resolve(schema)
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields") or value is None:
        return value
    expected = schema.get("type")
    got = _JSON_TYPES.get(type(value), "unknown")
    if schema.get("format") == "int-or-string" or schema.get("x-kubernetes-int-or-string"):
        if got not in ("string", "integer"):
            problems.type_errors.append((path, "string or integer", got))
        return value
    if expected == "object" or "properties" in schema:
        if got != "object":
            problems.type_errors.append((path, "object", got))
            return value
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            child_path = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                out[key] = check(item, properties[key], defs, child_path, problems, prune=prune)
            elif isinstance(extra, dict):
                out[key] = check(item, extra, defs, child_path, problems, prune=prune)
            elif properties is None and extra is None:
                out[key] = item
            else:
                problems.unknown.append(child_path)
                if not prune:
                    out[key] = item
        return out
    if expected == "array":
        if got != "array":
            problems.type_errors.append((path, "array", got))
            return value
        items = schema.get("items") or {}
        return [check(item, items, defs, f"{path}[{i}]", problems, prune=prune) for i, item in enumerate(value)]
    if expected == "integer" and got != "integer":
        problems.type_errors.append((path, "integer", got))
    elif expected == "number" and got not in ("integer", "number"):
        problems.type_errors.append((path, "number", got))
    elif expected == "string" and got != "string":
        problems.type_errors.append((path, "string", got))
    elif expected == "boolean" and got != "boolean":
        problems.type_errors.append((path, "boolean", got))
    return value
