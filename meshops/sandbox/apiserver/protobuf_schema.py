"""Regenerate ``data/protobuf-schema.json`` from a kubectl binary.

kubectl sends Kubernetes protobuf (``application/vnd.kubernetes.protobuf``) for built-in kinds
in its imperative commands (``kubectl create deployment``...). Decoding needs each message's
field numbers; every client-go build carries the generated.proto descriptors gzip-compressed,
so they are read from there rather than hand-copied:

    python -m meshops.sandbox.apiserver.protobuf_schema /usr/lib/google-cloud-sdk/bin/kubectl.1.33

Field numbers never change between Kubernetes releases (protobuf compatibility), so one recent
kubectl serves every client version.
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from pathlib import Path
from typing import Any

from meshops.sandbox.apiserver.protobuf import wire_fields

# The packages whose kinds the sandbox serves (and what they embed).
PACKAGES = (
    "k8s.io/api/core/v1/",
    "k8s.io/api/apps/v1/",
    "k8s.io/api/batch/v1/",
    "k8s.io/api/policy/v1/",
    "k8s.io/api/coordination/v1/",
    "k8s.io/api/discovery/v1/",
    "k8s.io/api/autoscaling/v1/",
    "k8s.io/api/admissionregistration/v1/",
    "k8s.io/api/authorization/v1/",
    "k8s.io/apimachinery/pkg/apis/meta/v1/",
    "k8s.io/apimachinery/pkg/runtime/",
    "k8s.io/apimachinery/pkg/api/resource/",
    "k8s.io/apimachinery/pkg/util/intstr/",
)
_GZIP = re.compile(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
OUTPUT = Path(__file__).with_name("data") / "protobuf-schema.json"


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs: the request decoder's wire reader, without wire types."""
    return [(number, value) for number, _, value in wire_fields(buf)]


def _message(buf: bytes, prefix: str, schema: dict[str, Any]) -> None:
    fields = _fields(buf)
    name = next(v.decode() for n, v in fields if n == 1)
    full = f"{prefix}.{name}"
    is_map = any(n == 7 and any(fn == 7 and fv for fn, fv in _fields(v)) for n, v in fields)
    entries: dict[str, list[Any]] = {}
    for number, value in fields:
        if number == 2:  # FieldDescriptorProto
            f = dict(_fields(value))
            entries[str(f[3])] = [f[1].decode(), f[5], f.get(4, 1), f.get(6, b"").decode().lstrip(".")]
        elif number == 3:  # nested type (map entries)
            _message(value, full, schema)
    schema[full] = {"map": True, "fields": entries} if is_map else {"fields": entries}


def extract(binary: Path) -> dict[str, Any]:
    data = binary.read_bytes()
    schema: dict[str, Any] = {}
    for match in _GZIP.finditer(data):
        try:
            descriptor = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[match.start() : match.start() + 4_000_000])
        except zlib.error:
            continue
        try:
            fields = _fields(descriptor)
        except (ValueError, IndexError):
            continue
        names = [v for n, v in fields if n == 1]
        if not names or not names[0].decode(errors="replace").startswith(PACKAGES):
            continue
        package = next(v.decode() for n, v in fields if n == 2)
        for number, value in fields:
            if number == 4:
                _message(value, package, schema)
    return schema


def main() -> None:
    schema = extract(Path(sys.argv[1]))
    OUTPUT.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(schema)} messages -> {OUTPUT}")


if __name__ == "__main__":
    main()
