"""Request bodies in, responses out: content types, Accept negotiation, list and Status bodies."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import yaml

from . import errors
from .jsonutil import dumps
from .kinds import ResourceType
from .store import StoredVersion

Obj = dict[str, Any]

TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PROTOBUF = "application/vnd.kubernetes.protobuf"


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(raw: bytes, content_type: str, *, what: str = "object") -> Any:
    """Decode a JSON or YAML body; no Content-Type means JSON (kube-apiserver does the same)."""
    kind = media_type(content_type)
    if kind == PROTOBUF:
        from .protobuf import decode

        return decode(raw)
    if not raw.strip():
        raise errors.bad_request(f"the request body is empty: expected a {what}")
    if kind in ("application/yaml", "application/apply-patch+yaml"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
        try:
            return yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise errors.bad_request(f"error converting YAML to JSON: {e}") from None
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise errors.bad_request("couldn't get version/kind; json parse error: invalid UTF-8") from None
    except ValueError as e:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None


@dataclass(frozen=True, kw_only=True)
class Accept:
    table: bool  # the client asked for a meta.k8s.io Table (kubectl get)
    yaml: bool
    include_object: str | None = None


def negotiate(accept_header: str, *, table_ok: bool) -> Accept:
    """Pick the response form from an Accept header, or raise 406 when none is servable."""
    if not accept_header.strip():
        return Accept(table=False, yaml=False)
    servable_json = False
    for part in accept_header.split(","):
        fields = [f.strip() for f in part.split(";")]
        kind = fields[0].lower()
        params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        if kind in ("application/json", "*/*", "application/*"):
            if params.get("as") == "Table":
                if table_ok:
                    return Accept(table=True, yaml=False)
                continue
            if params.get("as"):  # PartialObjectMetadata and friends: not served
                continue
            servable_json = True
            break
        if kind == "application/yaml" and not params.get("as"):
            return Accept(table=False, yaml=True)
    if servable_json:
        return Accept(table=False, yaml=False)
    raise errors.not_acceptable("only the following media types are accepted: application/json, application/yaml")


def object_json(rt: ResourceType, version: StoredVersion) -> bytes:
    """An object as served under ``rt``'s group/version (CRD objects are stored once for all)."""
    if version.obj.get("apiVersion") == rt.api_version:
        return version.json()
    return dumps({**version.obj, "apiVersion": rt.api_version})


def list_json(
    rt: ResourceType, versions: list[StoredVersion], rv: int, continue_token: str | None, remaining: int | None
) -> bytes:
    meta: Obj = {"resourceVersion": str(rv)}
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    head = dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
    items = b",".join(object_json(rt, v) for v in versions)
    return head[:-1] + b',"items":[' + items + b"]}"


def success_status(rt: ResourceType, obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    details: Obj = {"name": meta.get("name"), "kind": rt.plural, "uid": meta.get("uid")}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

def parse_resource_version(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise errors.bad_request(f"invalid resourceVersion {value!r}") from None


def encode_continue(namespace: str, name: str, rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{namespace}/{name}"}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[tuple[str, str], int]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        namespace, _, name = str(raw["start"]).partition("/")
        return (namespace, name), int(raw["rv"])
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from None
