"""Small helpers for JSON-shaped data: fast copies, compact encoding, dotted paths, timestamps."""

from __future__ import annotations

import json
import pickle
import time
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    return _encoder.encode(value).encode()


def clone(value: Any) -> Any:
    """Deep copy of JSON data. A pickle round trip is the fastest way in CPython (about 3x
    ``copy.deepcopy`` and 2x a recursive copy on a pod); JSON data pickles losslessly."""
    if isinstance(value, dict | list):
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))  # noqa: S301 - our own bytes
    return value


_now_cache: tuple[int, str] = (0, "")


def now_rfc3339() -> str:
    """Second-precision UTC time; formatted once per second (controllers stamp a lot)."""
    global _now_cache
    second = int(time.time())
    if _now_cache[0] != second:
        _now_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _now_cache[1]


def now_rfc3339_micro() -> str:
    """MicroTime, as Events and Leases use."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> float:
    text = text.replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def age_seconds(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    try:
        return max(0.0, time.time() - parse_rfc3339(timestamp))
    except ValueError:
        return 0.0


def split_path(path: str) -> list[str]:
    """``.spec.replicas`` -> ["spec", "replicas"] (the JSONPath subset CRD scale paths use)."""
    return [p for p in path.strip().lstrip(".").split(".") if p]


def get_path(obj: Any, path: str) -> Any:
    node = obj
    for key in split_path(path):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def set_path(obj: Obj, path: str, value: Any) -> None:
    keys = split_path(path)
    node = obj
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def meta(obj: Obj) -> Obj:
    """``obj["metadata"]``, created if missing or null."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m
