"""Decoding Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

kubectl's imperative commands (``create deployment``, ``create configmap``...) send built-in
kinds as protobuf: the ``k8s\\0`` magic, then a ``runtime.Unknown`` wrapping the object. The
object is decoded with the field tables in ``data/protobuf-schema.json`` (see
``protobuf_schema.py``) into the same dict its JSON form would give.

Go's encoder writes non-pointer fields even when empty, and protobuf cannot tell a zero from an
unset pointer, so zero values are dropped (as JSON's ``omitempty`` would) except for the pointer
fields where an explicit zero or false means something (``replicas: 0``, ``suspend: false``).
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import errors

Obj = dict[str, Any]

MAGIC = b"k8s\x00"
_SCHEMA_PATH = Path(__file__).with_name("data") / "protobuf-schema.json"
_schema: dict[str, Any] | None = None
_lock = threading.Lock()

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_TIME = {_META + "Time", _META + "MicroTime"}
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAW = {"k8s.io.apimachinery.pkg.runtime.RawExtension", _META + "FieldsV1"}
_DURATION = _META + "Duration"
# Go structs embedded with `json:",inline"`: their fields belong to the parent in JSON.
_INLINE = {
    ("k8s.io.api.core.v1.Volume", "volumeSource"),
    ("k8s.io.api.core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("k8s.io.api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("k8s.io.api.core.v1.Probe", "handler"),
    ("k8s.io.api.admissionregistration.v1.RuleWithOperations", "rule"),
    ("k8s.io.api.admissionregistration.v1.NamedRuleWithOperations", "ruleWithOperations"),
}
# Pointer fields where an explicit zero/false/"" differs from unset.
_KEEP_ZERO = {
    "replicas", "parallelism", "completions", "backoffLimit", "backoffLimitPerIndex", "suspend", "partition",
    "revisionHistoryLimit", "progressDeadlineSeconds", "terminationGracePeriodSeconds", "activeDeadlineSeconds",
    "automountServiceAccountToken", "successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds",
    "ttlSecondsAfterFinished", "optional", "enableServiceLinks", "immutable", "runAsUser", "runAsGroup", "runAsNonRoot",
    "privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "defaultMode", "hostUsers", "shareProcessNamespace",
    "allocateLoadBalancerNodePorts", "publishNotReadyAddresses", "minAvailable", "maxUnavailable", "maxSurge",
    "unhealthyPodEvictionPolicy", "ready", "serving", "terminating", "gracePeriodSeconds",
}
_GROUP_PACKAGES = {
    "": "core", "apps": "apps", "batch": "batch", "policy": "policy", "coordination.k8s.io": "coordination",
    "discovery.k8s.io": "discovery", "autoscaling": "autoscaling", "admissionregistration.k8s.io": "admissionregistration",
    "authorization.k8s.io": "authorization",
}


def _load() -> dict[str, Any]:
    global _schema
    with _lock:
        if _schema is None:
            _schema = json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))
        return _schema


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def wire_fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of every field in one protobuf message."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > len(buf):
                raise ValueError("truncated field")
            value, i = buf[i : i + length], i + length
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    """A varint read as int64 (negative numbers arrive as 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: int, wire: int, value: Any) -> Any:
    if kind == 9:
        return value.decode("utf-8")
    if kind == 12:
        return base64.b64encode(value).decode()
    if kind == 8:
        return bool(value)
    if kind in (3, 5, 14):
        v = _signed(value)
        return v - (1 << 32) if kind == 5 and v >= 1 << 31 else v
    if kind in (4, 13):
        return value
    if kind in (17, 18):
        return (value >> 1) ^ -(value & 1)
    if kind == 1:
        return struct.unpack("<d", value)[0]
    if kind == 2:
        return struct.unpack("<f", value)[0]
    if kind in (6, 7):
        return int.from_bytes(value, "little")
    raise ValueError(f"unsupported field type {kind}")


def _special(type_name: str, raw: bytes) -> Any:
    fields = {n: v for n, _, v in wire_fields(raw)}
    if type_name in _TIME:
        seconds = _signed(fields.get(1, 0))
        nanos = fields.get(2, 0)
        if not seconds and not nanos:
            return None
        moment = datetime.fromtimestamp(seconds + nanos / 1e9, UTC)
        if type_name.endswith("MicroTime"):
            return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if type_name == _QUANTITY:
        return fields.get(1, b"").decode() or None
    if type_name == _INT_OR_STRING:
        if fields.get(1, 0) == 1:
            return fields.get(3, b"").decode()
        return _signed(fields.get(2, 0))
    if type_name in _RAW:
        data = fields.get(1, b"")
        return json.loads(data) if data else None
    if type_name == _DURATION:
        return f"{_signed(fields.get(1, 0)) / 1e9:g}s"
    raise KeyError(type_name)


def _is_empty(value: Any) -> bool:
    return value in (None, "", 0, False) or (isinstance(value, dict | list) and not value)


def decode_message(type_name: str, raw: bytes) -> Any:
    schema = _load()
    if type_name in _TIME or type_name in (_QUANTITY, _INT_OR_STRING, _DURATION) or type_name in _RAW:
        return _special(type_name, raw)
    message = schema.get(type_name)
    if message is None:
        raise ValueError(f"unknown protobuf message {type_name}")
    table = message["fields"]
    out: Obj = {}
    for number, wire, value in wire_fields(raw):
        spec = table.get(str(number))
        if spec is None:
            continue  # a field newer than our table: ignore, as decoders do
        name, kind, label, child = spec
        if kind == 11:
            child_msg = schema.get(child)
            if child_msg is not None and child_msg.get("map"):
                entry = {n: v for n, _, v in wire_fields(value)}
                key_spec, value_spec = child_msg["fields"]["1"], child_msg["fields"]["2"]
                key = _scalar(key_spec[1], 2, entry.get(1, b"")) if key_spec[1] in (9, 12) else _scalar(key_spec[1], 0, entry.get(1, 0))
                if value_spec[1] == 11:
                    item = decode_message(value_spec[3], entry.get(2, b""))
                elif value_spec[1] in (9, 12):
                    item = _scalar(value_spec[1], 2, entry.get(2, b""))
                else:
                    item = _scalar(value_spec[1], 0, entry.get(2, 0))
                out.setdefault(name, {})[key] = item
                continue
            decoded = decode_message(child, value)
        elif wire == 2 and kind not in (9, 12):  # packed repeated scalars
            items, i = [], 0
            while i < len(value):
                v, i = _varint(value, i)
                items.append(_scalar(kind, 0, v))
            out.setdefault(name, []).extend(items)
            continue
        else:
            decoded = _scalar(kind, wire, value)
        if label == 3:
            out.setdefault(name, []).append(decoded)
        elif (type_name, name) in _INLINE or name == "localObjectReference":
            if isinstance(decoded, dict):
                out.update(decoded)
        else:
            out[name] = decoded
    return {k: v for k, v in out.items() if not _is_empty(v) or (k in _KEEP_ZERO and v is not None and v != {})}


def decode(body: bytes) -> Obj:
    """A ``k8s\\0``-framed protobuf object as its JSON-equivalent dict."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("protobuf body does not start with the k8s\\0 magic")
    try:
        unknown = {n: v for n, _, v in wire_fields(body[len(MAGIC):])}
        type_meta = {n: v.decode() for n, _, v in wire_fields(unknown.get(1, b""))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        group, _, version = api_version.rpartition("/")
        package = _GROUP_PACKAGES.get(group)
        if package is None:
            raise errors.unsupported_media_type(f"application/vnd.kubernetes.protobuf ({api_version} {kind})")
        obj = decode_message(f"k8s.io.api.{package}.{version}.{kind}", unknown.get(2, b""))
    except (ValueError, KeyError, UnicodeDecodeError, struct.error) as e:
        raise errors.bad_request(f"unable to decode protobuf body: {e}") from None
    if not isinstance(obj, dict):
        raise errors.bad_request("protobuf body is not an object")
    return {"apiVersion": api_version, "kind": kind, **obj}
