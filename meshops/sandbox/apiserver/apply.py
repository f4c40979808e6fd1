"""Server-side apply: merge an applied configuration and track what each manager owns.

Each Apply manager's fields are kept in ``metadata.managedFields`` (FieldsV1). Re-applying with a
field left out removes it, unless another Apply manager owns it. Lists with a patch merge key
merge item by item (``k:{"name":"web"}``); other lists are atomic. Conflicts between managers
are not detected: the last applier wins, as with ``--force-conflicts``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import ApiError
from .jsonutil import clone, now_rfc3339
from .kinds import ResourceType
from .patching import MERGE_TYPES, PRIMITIVE, root_fields
from .wire import parse_resource_version

if TYPE_CHECKING:
    from .ports import ResourceVerbs
    from .store import StoredVersion

Obj = dict[str, Any]
Fields = dict[str, tuple[str | None, str | None]]
Path = tuple[str, ...]

_SERVER_OWNED = {"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"}


def _item_token(item: Any, key: str) -> str:
    if key == PRIMITIVE:
        return "v:" + json.dumps(item, separators=(",", ":"))
    return "k:" + json.dumps({key: item.get(key) if isinstance(item, dict) else None}, separators=(",", ":"))


def field_set(config: Obj, kind: str) -> set[Path]:
    """Every path the configuration sets, in FieldsV1 terms."""
    out: set[Path] = set()
    _collect(config, root_fields(kind), (), out, top=True)
    return out


def _collect(node: Obj, fields: Fields, prefix: Path, out: set[Path], *, top: bool = False) -> None:
    for key, value in node.items():
        if top and key in ("apiVersion", "kind"):
            continue
        if prefix == ("f:metadata",) and key in _SERVER_OWNED:
            continue
        path = (*prefix, f"f:{key}")
        out.add(path)
        child_type, merge_key = fields.get(key, (None, None))
        if isinstance(value, dict):
            _collect(value, MERGE_TYPES.get(child_type or "", {}), path, out)
        elif isinstance(value, list) and merge_key is not None:
            for item in value:
                item_path = (*path, _item_token(item, merge_key))
                out.add(item_path)
                if isinstance(item, dict) and merge_key != PRIMITIVE:
                    _collect(item, MERGE_TYPES.get(child_type or "", {}), item_path, out)


def encode_fields(paths: set[Path]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    _mark_items(root)
    return root


def _mark_items(node: Obj) -> None:
    for key, child in node.items():
        if key.startswith(("k:", "v:")) and child:
            child.setdefault(".", {})
        if isinstance(child, dict):
            _mark_items(child)


def decode_fields(fields_v1: Obj | None) -> set[Path]:
    out: set[Path] = set()

    def walk(node: Obj, prefix: Path) -> None:
        for key, child in node.items():
            if key == ".":
                continue
            path = (*prefix, key)
            out.add(path)
            if isinstance(child, dict):
                walk(child, path)

    walk(fields_v1 or {}, ())
    return out


def _merge(current: Any, applied: Any, fields: Fields) -> Any:
    if not isinstance(applied, dict) or not isinstance(current, dict):
        return clone(applied)
    result = dict(current)
    for key, value in applied.items():
        child_type, merge_key = fields.get(key, (None, None))
        child_fields = MERGE_TYPES.get(child_type or "", {})
        if isinstance(value, dict):
            result[key] = _merge(result.get(key), value, child_fields)
        elif isinstance(value, list) and merge_key is not None and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, merge_key, child_fields)
        else:
            result[key] = clone(value)
    return result


def _merge_list(current: list[Any], applied: list[Any], key: str, fields: Fields) -> list[Any]:
    if key == PRIMITIVE:
        return current + [v for v in applied if v not in current]
    out = list(current)
    for item in applied:
        token = _item_token(item, key)
        index = next((i for i, c in enumerate(out) if _item_token(c, key) == token), None)
        if index is None:
            out.append(clone(item))
        else:
            out[index] = _merge(out[index], item, fields)
    return out


def _remove_path(obj: Any, path: Path) -> None:
    """Remove the field at ``path`` (FieldsV1 tokens) if present."""
    node = obj
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if part.startswith("f:"):
            if not isinstance(node, dict):
                return
            name = part[2:]
            if last:
                node.pop(name, None)
                return
            node = node.get(name)
        elif part.startswith(("k:", "v:")):
            if not isinstance(node, list):
                return
            match = _find_item(node, part)
            if match is None:
                return
            if last:
                node.remove(match)
                return
            node = match
        else:
            return


def _find_item(items: list[Any], token: str) -> Any:
    if token.startswith("v:"):
        value = json.loads(token[2:])
        return value if value in items else None
    wanted = json.loads(token[2:])
    for item in items:
        if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            return item
    return None


def apply(current: Obj | None, applied: Obj, *, manager: str, kind: str, api_version: str) -> Obj:
    """The object after ``manager`` applies ``applied`` to ``current`` (None when creating)."""
    new_fields = field_set(applied, kind)
    base = clone(current) if current is not None else {}
    managed = list(((current or {}).get("metadata") or {}).get("managedFields") or [])
    old_fields: set[Path] = set()
    others: set[Path] = set()
    for entry in managed:
        paths = decode_fields(entry.get("fieldsV1"))
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            old_fields = paths
        elif entry.get("operation") == "Apply":
            others |= paths
    result = _merge(base, applied, root_fields(kind))
    # Deepest paths first, so removing an item does not hide the fields beneath it.
    for path in sorted(old_fields - new_fields - others, key=len, reverse=True):
        if any(p[: len(path)] == path for p in new_fields | others):
            continue  # a child is still owned: keep the parent
        _remove_path(result, path)
    entry = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": encode_fields(new_fields),
    }
    managed = [e for e in managed if not (e.get("manager") == manager and e.get("operation") == "Apply")]
    managed.append(entry)
    result.setdefault("metadata", {})["managedFields"] = managed
    return result if isinstance(result, dict) else {}


def apply_patch(
    api: ResourceVerbs,
    t: ResourceType,
    namespace: str | None,
    name: str,
    applied: Any,
    subresource: str | None,
    dry_run: bool,
    manager: str | None,
    field_validation: str | None,
    warnings: list[str] | None,
) -> tuple[StoredVersion, bool]:
    """PATCH with application/apply-patch+yaml: create when missing, else apply onto the object."""
    if not manager:
        raise errors.bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set")
    if not isinstance(applied, dict):
        raise errors.bad_request("the applied configuration must be an object")
    if applied.get("apiVersion") != t.api_version or applied.get("kind") != t.kind:
        raise errors.bad_request(
            f"apiVersion and kind must be {t.api_version} and {t.kind}, got {applied.get('apiVersion')!r} "
            f"and {applied.get('kind')!r}"
        )
    meta = applied.get("metadata") or {}
    if meta.get("name") not in (None, name):
        raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    if api.store.get_version(t.group_resource, namespace or "", name) is None and subresource is None:
        created = apply(None, applied, manager=manager, kind=t.kind, api_version=t.api_version)
        created.setdefault("metadata", {})["name"] = name
        try:
            version = api.create(
                t, created, namespace=namespace, dry_run=dry_run, field_validation=field_validation, warnings=warnings
            )
            return version, True
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise  # else: created meanwhile; fall through to apply onto it
    wanted_rv = parse_resource_version(meta.get("resourceVersion"))

    def applied_to(current: Obj) -> Obj:
        return apply(current, applied, manager=manager, kind=t.kind, api_version=t.api_version)

    version = api.read_modify_write(
        t, namespace, name, applied_to, wanted_rv, subresource=subresource, dry_run=dry_run,
        field_validation=field_validation, warnings=warnings,
    )
    return version, False
