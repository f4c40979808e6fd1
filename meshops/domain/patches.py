"""JSON merge patches (RFC 7386) and JSON patches (RFC 6902), as the Kubernetes API applies them.

One implementation for the fake cluster and the sandbox API server. JSON patches are applied
by the ``jsonpatch`` package; a malformed patch is ``PatchInvalid`` (the API server's 400), one
that does not apply to the object (a missing path, a failed ``test``) is ``PatchConflict`` (422).
Strategic merge is not here: it needs each kind's merge keys, which only the sandbox models.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer


class PatchInvalid(ValueError):
    """The patch itself is malformed."""


class PatchConflict(ValueError):
    """The patch is well formed but does not apply to this object."""


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` merged into a copy of ``target``: maps merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, operations: Any) -> Any:
    """``operations`` applied in order to a copy of ``doc``; all or nothing."""
    if not isinstance(operations, list):
        raise PatchInvalid("json patch must be a list of operations")
    for op in operations:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchInvalid(f"invalid json patch operation: {op!r}")
        path = op.get("path")
        if not isinstance(path, str) or (path and not path.startswith("/")):
            raise PatchInvalid(f"json patch operation {op['op']!r} has no valid path (a JSON pointer): {path!r}")
    try:
        return jsonpatch.apply_patch(doc, operations, in_place=False)
    except jsonpatch.InvalidJsonPatch as exc:
        raise PatchInvalid(str(exc)) from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchConflict(f"the json patch does not apply: {exc}") from None
