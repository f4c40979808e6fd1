"""Encoding an OpenAPI v2 document as the gnostic protobuf kubectl asks ``/openapi/v2`` for.

kubectl (client-go's ``OpenAPISchema``) requests
``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and cannot read JSON there.
Field numbers are those of gnostic's ``openapiv2/OpenAPIv2.proto``; vendor extensions travel
as YAML text in ``Any.yaml``, which is how kube-openapi reads them back.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

Obj = dict[str, Any]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _varint(len(data)) + data


def _str(number: int, text: str) -> bytes:
    return _bytes(number, text.encode()) if text else b""


def _bool(number: int, value: bool) -> bytes:
    return _key(number, 0) + b"\x01" if value else b""


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value) if value else b""


def _any(value: Any) -> bytes:
    """gnostic Any: the value as YAML (field 2)."""
    return _str(2, yaml.safe_dump(value, default_flow_style=False) if not isinstance(value, str) else json.dumps(value) + "\n")


def _named_any(name: str, value: Any) -> bytes:
    return _str(1, name) + _bytes(2, _any(value))


def schema(s: Obj) -> bytes:
    out = bytearray()
    out += _str(1, s.get("$ref", ""))
    out += _str(2, s.get("format", ""))
    out += _str(3, s.get("title", ""))
    out += _str(4, s.get("description", ""))
    if "default" in s:
        out += _bytes(5, _any(s["default"]))
    for number, key in ((11, "maxLength"), (12, "minLength"), (14, "maxItems"), (15, "minItems")):
        out += _int(number, int(s.get(key, 0) or 0))
    for name in s.get("required") or []:
        out += _str(19, name)
    for value in s.get("enum") or []:
        out += _bytes(20, _any(value))
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, schema(extra)))
    elif isinstance(extra, bool):
        out += _bytes(21, _key(2, 0) + (b"\x01" if extra else b"\x00"))
    if s.get("type"):
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        out += _bytes(22, b"".join(_str(1, t) for t in types))
    if isinstance(s.get("items"), dict):
        out += _bytes(23, _bytes(1, schema(s["items"])))
    for sub in s.get("allOf") or []:
        out += _bytes(24, schema(sub))
    if s.get("properties"):
        props = b"".join(_bytes(1, _str(1, name) + _bytes(2, schema(p))) for name, p in s["properties"].items())
        out += _bytes(25, props)
    for key, value in s.items():
        if key.startswith("x-"):
            out += _bytes(31, _named_any(key, value))
    return bytes(out)


def _parameter(p: Obj) -> bytes:
    if p.get("in") == "body":
        body = _str(1, p.get("description", "")) + _str(2, p["name"]) + _str(3, "body") + _bool(4, p.get("required", False))
        body += _bytes(5, schema(p.get("schema") or {}))
        return _bytes(1, _bytes(1, body))
    sub = _bool(1, p.get("required", False)) + _str(2, p["in"]) + _str(3, p.get("description", "")) + _str(4, p["name"])
    if p["in"] == "query":
        sub += _bool(5, p.get("allowEmptyValue", False)) + _str(6, p.get("type", "string"))
        return _bytes(1, _bytes(2, _bytes(3, sub)))
    sub += _str(5, p.get("type", "string"))
    return _bytes(1, _bytes(2, _bytes(4, sub)))


def _operation(op: Obj) -> bytes:
    out = bytearray()
    for tag in op.get("tags") or []:
        out += _str(1, tag)
    out += _str(3, op.get("description", ""))
    out += _str(5, op.get("operationId", ""))
    for media in op.get("produces") or []:
        out += _str(6, media)
    for media in op.get("consumes") or []:
        out += _str(7, media)
    for p in op.get("parameters") or []:
        out += _bytes(8, _parameter(p))
    responses = b""
    for code, response in (op.get("responses") or {}).items():
        body = _str(1, response.get("description", ""))
        if response.get("schema"):
            body += _bytes(2, _bytes(1, schema(response["schema"])))
        responses += _bytes(1, _str(1, code) + _bytes(2, _bytes(1, body)))
    out += _bytes(9, responses)
    for scheme in op.get("schemes") or []:
        out += _str(10, scheme)
    for key, value in op.items():
        if key.startswith("x-"):
            out += _bytes(13, _named_any(key, value))
    return bytes(out)


_OPERATIONS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def document(doc: Obj) -> bytes:
    out = bytearray()
    out += _str(1, doc.get("swagger", "2.0"))
    info = doc.get("info") or {}
    out += _bytes(2, _str(1, info.get("title", "")) + _str(2, info.get("version", "")))
    paths = b""
    for path, item in (doc.get("paths") or {}).items():
        body = b""
        for method, number in _OPERATIONS.items():
            if method in item:
                body += _bytes(number, _operation(item[method]))
        for p in item.get("parameters") or []:
            body += _bytes(9, _parameter(p))
        paths += _bytes(2, _str(1, path) + _bytes(2, body))
    out += _bytes(8, paths)
    definitions = b"".join(_bytes(1, _str(1, name) + _bytes(2, schema(s))) for name, s in (doc.get("definitions") or {}).items())
    out += _bytes(9, definitions)
    return bytes(out)
