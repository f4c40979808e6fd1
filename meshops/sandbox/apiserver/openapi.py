"""``/openapi/v2`` (JSON or gnostic protobuf) and ``/openapi/v3`` (one document per group-version).

kubectl needs them for ``apply`` (patch computation, and the ``fieldValidation`` support check:
a PATCH operation carrying the kind's ``x-kubernetes-group-version-kind`` and a
``fieldValidation`` query parameter), ``explain``, and client-side validation (kubectl 1.20).
Built-in kinds come from ``schemas.Definitions``; custom resources from their CRD's
openAPIV3Schema. Documents are rebuilt only when the set of served types changes.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from . import errors, gnostic
from .jsonutil import clone, dumps
from .kinds import ResourceType, ResourceTypes
from .schemas import REF_PREFIX, Definitions, FieldProblems, check

Obj = dict[str, Any]

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
V3_REF_PREFIX = "#/components/schemas/"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
_PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"]


def _query(name: str, description: str, kind: str = "string") -> Obj:
    return {"name": name, "in": "query", "description": description, "type": kind, "uniqueItems": True}


_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All")
_FIELD_MANAGER = _query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes.")
_FIELD_VALIDATION = _query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.")
_FORCE = _query("force", "Force is going to \"force\" Apply requests.", "boolean")
_LIST_PARAMS = [
    _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
    _query("continue", "The continue option should be set when retrieving more results from the server."),
    _query("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from."),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("watch", "Watch for changes to the described resources.", "boolean"),
    _query("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
]
_DELETE_PARAMS = [
    _DRY_RUN,
    _query("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"),
    _query("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground."),
]


def _reverse_group(group: str) -> str:
    return ".".join(reversed(group.split("."))) if group else "core"


def crd_definition_name(t: ResourceType) -> str:
    return f"{_reverse_group(t.group)}.{t.version}.{t.kind}"


def _crd_schema(t: ResourceType) -> Obj:
    schema: Obj = clone(t.schema) if t.schema else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    properties: Obj = schema.setdefault("properties", {}) if schema.get("type", "object") == "object" else {}
    properties["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}
    properties["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}
    properties["metadata"] = {"$ref": REF_PREFIX + _OBJECT_META, "description": "Standard object's metadata."}
    schema["x-kubernetes-group-version-kind"] = [{"group": t.group, "kind": t.kind, "version": t.version}]
    return schema


def _v2_schema(schema: Any) -> Any:
    """A CRD schema as the API server publishes it in OpenAPI v2: nodes marked
    `x-kubernetes-preserve-unknown-fields` lose `properties`/`required`, so clients that validate
    against v2 (kubectl <= 1.22 on the client side) accept any field there, as the server does.
    Without this kubectl 1.20 refuses such an object ("ValidationError(Widget): unknown field
    \"spec\"") although the real server would store it (kube-apiserver's v2 builder,
    apiextensions-apiserver controller/openapi/v2 ToStructuralOpenAPIV2, strips the same)."""
    if isinstance(schema, list):
        return [_v2_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _v2_schema(v) for k, v in schema.items()}
    if out.get("x-kubernetes-preserve-unknown-fields") is True:
        out.pop("properties", None)
        out.pop("required", None)
    return out


def _crd_list_schema(t: ResourceType) -> Obj:
    return {
        "description": f"{t.kind}List is a list of {t.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": REF_PREFIX + crd_definition_name(t)}},
            "kind": {"type": "string"},
            "metadata": {"$ref": REF_PREFIX + _LIST_META},
        },
        "x-kubernetes-group-version-kind": [{"group": t.group, "kind": f"{t.kind}List", "version": t.version}],
    }


def _refs(schema: Any, out: set[str]) -> None:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            out.add(ref.removeprefix(REF_PREFIX))
        for value in schema.values():
            _refs(value, out)
    elif isinstance(schema, list):
        for value in schema:
            _refs(value, out)


def _to_v3(schema: Any) -> Any:
    """v2 schema -> v3: refs under components, and a described ref wrapped in allOf (as kube does)."""
    if isinstance(schema, list):
        return [_to_v3(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _to_v3(v) for k, v in schema.items()}
    ref = out.get("$ref")
    if isinstance(ref, str):
        ref = out["$ref"] = V3_REF_PREFIX + ref.removeprefix(REF_PREFIX)
        if len(out) > 1:
            rest = {k: v for k, v in out.items() if k != "$ref"}
            out = {"allOf": [{"$ref": ref}], "default": {}, **rest}
    return out


class OpenApi:
    def __init__(self, types: ResourceTypes, k8s_version: str) -> None:
        self.types = types
        self.k8s_version = k8s_version
        self._lock = threading.Lock()
        self._generation = -1
        self._v2: Obj = {}
        self._v2_json: bytes = b""
        self._v2_proto: bytes = b""
        self._v3: dict[str, bytes] = {}
        self._v3_hash: dict[str, str] = {}

    # ---- serving -------------------------------------------------------------------------------

    def serve(self, path: str, query: dict[str, list[str]], accept: str) -> tuple[int, bytes, str, dict[str, str]] | None:
        del query
        self._refresh()
        if path == "/openapi/v2":
            if "protobuf" in accept:
                # Go cannot parse the "@" in the request's media type: kube answers octet-stream.
                return 200, self._v2_proto, "application/octet-stream", {}
            return 200, self._v2_json, "application/json", {}
        if path == "/openapi/v3":
            index = {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={h}"} for gv, h in self._v3_hash.items()}}
            return 200, dumps(index), "application/json", {}
        gv = path.removeprefix("/openapi/v3/")
        doc = self._v3.get(gv)
        if doc is None:
            return None
        return 200, doc, "application/json", {"Etag": f'"{self._v3_hash[gv]}"'}

    def _refresh(self) -> None:
        with self._lock:
            if self._generation == self.types.generation:
                return
            defs = Definitions.get()
            definitions = dict(defs.definitions)
            v2_definitions: Obj = {}
            paths: Obj = {}
            by_gv: dict[str, list[ResourceType]] = {}
            for t in self.types.all():
                name = self._definition_for(t, defs)
                if name is None:
                    continue
                if t.custom:
                    definitions[name] = _crd_schema(t)
                    definitions[name + "List"] = _crd_list_schema(t)
                    v2_definitions[name] = _v2_schema(definitions[name])
                paths.update(self._paths(t, name))
                by_gv.setdefault(f"api/{t.version}" if not t.group else f"apis/{t.group}/{t.version}", []).append(t)
            self._v2 = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": f"v{self.k8s_version}"}, "paths": paths,
                        "definitions": {**definitions, **v2_definitions}}
            self._v2_json = dumps(self._v2)
            self._v2_proto = gnostic.document(self._v2)
            self._v3, self._v3_hash = {}, {}
            for gv, types in by_gv.items():
                doc = self._v3_document(gv, types, definitions, paths)
                self._v3[gv] = doc
                self._v3_hash[gv] = hashlib.sha512(doc).hexdigest().upper()
            self._generation = self.types.generation

    @staticmethod
    def _definition_for(t: ResourceType, defs: Definitions) -> str | None:
        if t.custom:
            return crd_definition_name(t)
        return defs.by_gvk.get((t.group, t.version, t.kind))

    def _paths(self, t: ResourceType, definition: str) -> Obj:
        base = f"/apis/{t.group}/{t.version}" if t.group else f"/api/{t.version}"
        collection = f"{base}/namespaces/{{namespace}}/{t.plural}" if t.namespaced else f"{base}/{t.plural}"
        item = f"{collection}/{{name}}"
        gvk = {"group": t.group, "kind": t.kind, "version": t.version}
        scope = "Namespaced" if t.namespaced else ""
        op_kind = f"{(t.group.split('.')[0] or 'core').capitalize()}{t.version.capitalize()}{scope}{t.kind}"
        ref = {"$ref": REF_PREFIX + definition}
        list_ref = {"$ref": REF_PREFIX + (definition + "List")}
        patch_types = [p for p in _PATCH_TYPES if not (t.custom and "strategic" in p)]

        def op(action: str, verb: str, params: list[Obj], response: Obj, *, consumes: list[str] | None = None) -> Obj:
            out: Obj = {
                "operationId": f"{verb}{op_kind}",
                "parameters": params,
                "produces": ["application/json", "application/yaml"],
                "responses": {"200": {"description": "OK", "schema": response}},
                "schemes": ["https"],
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            }
            if consumes:
                out["consumes"] = consumes
            return out

        body = {"name": "body", "in": "body", "required": True, "schema": ref}
        paths: Obj = {
            collection: {
                "get": op("list", "list", _LIST_PARAMS, list_ref),
                "post": op("post", "create", [body, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION], ref, consumes=["*/*"]),
                "delete": op("deletecollection", "deleteCollection", [*_LIST_PARAMS[:4], *_DELETE_PARAMS], {"$ref": REF_PREFIX + "io.k8s.apimachinery.pkg.apis.meta.v1.Status"}),
            },
            item: {
                "get": op("get", "read", [], ref),
                "put": op("put", "replace", [body, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION], ref, consumes=["*/*"]),
                "patch": op("patch", "patch", [{**body, "schema": {"type": "object"}}, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE], ref, consumes=patch_types),
                "delete": op("delete", "delete", _DELETE_PARAMS, {"$ref": REF_PREFIX + "io.k8s.apimachinery.pkg.apis.meta.v1.Status"}),
            },
        }
        if t.virtual:  # create-only reviews: nothing to read, update or delete
            return {collection: {"post": paths[collection]["post"], "parameters": []}}
        for sub in sorted(t.subresources & {"status", "scale"}):
            sub_ref = {"$ref": REF_PREFIX + "io.k8s.api.autoscaling.v1.Scale"} if sub == "scale" else ref
            sub_kind = {"group": "autoscaling", "kind": "Scale", "version": "v1"} if sub == "scale" else gvk
            sub_body = {**body, "schema": sub_ref}
            entry = {
                "get": op("get", f"read{sub.capitalize()}", [], sub_ref),
                "put": op("put", f"replace{sub.capitalize()}", [sub_body, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION], sub_ref, consumes=["*/*"]),
                "patch": op("patch", f"patch{sub.capitalize()}", [{**body, "schema": {"type": "object"}}, _DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE], sub_ref, consumes=patch_types),
            }
            for operation in entry.values():
                operation["x-kubernetes-group-version-kind"] = sub_kind
                operation["operationId"] += sub.capitalize()
            paths[f"{item}/{sub}"] = entry
        for path_item in paths.values():
            path_item["parameters"] = [
                {"name": "namespace", "in": "path", "required": True, "type": "string", "description": "object name and auth scope"}
            ] if t.namespaced else []
        return paths

    def _v3_document(self, gv: str, types: list[ResourceType], definitions: Obj, v2_paths: Obj) -> bytes:
        prefix = "/" + gv + "/"
        wanted: set[str] = set()
        paths: Obj = {}
        for path, item in v2_paths.items():
            if not path.startswith(prefix) or path[len(prefix):].count("/") > 5:
                continue
            paths[path] = {method: self._v3_operation(op) if method != "parameters" else self._v3_parameters(op) for method, op in item.items()}
            _refs(item, wanted)
        del types
        schemas: Obj = {}
        pending = list(wanted)
        while pending:
            name = pending.pop()
            if name in schemas or name not in definitions:
                continue
            schemas[name] = definitions[name]
            found: set[str] = set()
            _refs(definitions[name], found)
            pending.extend(found - schemas.keys())
        doc = {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": f"v{self.k8s_version}"},
            "paths": paths,
            "components": {"schemas": {name: _to_v3(s) for name, s in sorted(schemas.items())}},
        }
        return dumps(doc)

    @staticmethod
    def _v3_parameters(params: list[Obj]) -> list[Obj]:
        return [
            {"name": p["name"], "in": p["in"], "description": p.get("description", ""), "required": p.get("required", False),
             "schema": {"type": p.get("type", "string"), "uniqueItems": True}}
            for p in params
        ]

    def _v3_operation(self, op: Obj) -> Obj:
        out = {k: v for k, v in op.items() if k not in ("parameters", "responses", "produces", "consumes", "schemes")}
        body = next((p for p in op.get("parameters") or [] if p.get("in") == "body"), None)
        out["parameters"] = self._v3_parameters([p for p in op.get("parameters") or [] if p.get("in") != "body"])
        if body is not None:
            out["requestBody"] = {"content": {c: {"schema": _to_v3(body["schema"])} for c in op.get("consumes") or ["*/*"]}, "required": True}
        out["responses"] = {
            code: {"description": r.get("description", ""), "content": {"application/json": {"schema": _to_v3(r.get("schema") or {})}}}
            for code, r in (op.get("responses") or {}).items()
        }
        return out

    # ---- field validation ----------------------------------------------------------------------

    def check_fields(self, t: ResourceType, obj: Obj, directive: str | None) -> tuple[Obj, list[str]]:
        """Type-check ``obj`` and handle unknown fields per ``fieldValidation``; returns (obj, warnings).

        Unknown fields are dropped (kube's decoder drops them; CRDs prune them), reported as
        warnings (``Warn``, the default over HTTP) or refused (``Strict``).
        """
        defs = Definitions.get()
        if t.custom:
            schema = _crd_schema(t)
        else:
            name = defs.by_gvk.get((t.group, t.version, t.kind))
            if name is None:
                return obj, []
            schema = {"$ref": REF_PREFIX + name}
        problems = FieldProblems()
        checked = check(obj, schema, defs, "", problems, prune=True)
        if problems.type_errors:
            if t.custom:
                raise errors.invalid(t.kind, t.group, str((obj.get("metadata") or {}).get("name") or ""), [
                    (path, "FieldValueTypeInvalid", f'Invalid value: "{got}": {path} in body must be of type {expected}: "{got}"')
                    for path, expected, got in problems.type_errors
                ])
            path, expected, got = problems.type_errors[0]
            raise errors.bad_request(
                f'{t.kind} in version "{t.version}" cannot be handled as a {t.kind}: json: cannot unmarshal {got} '
                f"into Go struct field {t.kind}.{path} of type {expected}"
            )
        unknown = [f'unknown field "{path}"' for path in problems.unknown]
        if unknown and directive == "Strict":
            raise errors.bad_request("strict decoding error: " + ", ".join(unknown))
        if directive == "Ignore":
            return checked, []
        return checked, unknown

