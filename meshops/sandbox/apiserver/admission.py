"""Admission: what every create and update passes through before the store.

Order, as in kube-apiserver: field checks against the schema (``fieldValidation``), defaulting,
mutating plugins (then defaulting again, as kube re-decodes webhook-mutated objects),
validation, validating plugins. Controllers' writes take the same path as HTTP clients'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from . import errors
from .defaults import Allocator, apply_defaults
from .errors import ApiError
from .kinds import ResourceType
from .plugins import AdmissionDenied, AdmissionRequest, MutatingPlugin, ValidatingPlugin
from .validation import validate, validate_update

Obj = dict[str, Any]
# (type, object, fieldValidation) -> (object with unknown fields dropped, warnings); the
# OpenAPI layer's check, handed in by the cluster (it sits above admission).
FieldCheck = Callable[[ResourceType, Obj, str], tuple[Obj, list[str]]]


def tidy_metadata(obj: Obj) -> None:
    """Drop empty omitempty metadata maps and lists (``kubectl label x k-`` leaves ``labels: {}``)."""
    meta = obj["metadata"]
    for key in ("labels", "annotations", "finalizers", "ownerReferences", "managedFields"):
        if key in meta and not meta[key]:
            del meta[key]


class Admission:
    """The admission chain of one cluster (fulfils ``ports.Admitter`` for the verbs).

    The plugin lists are the cluster's own (shared, appended to by the Istio layer and tests);
    ``host`` is what plugins receive as their ``cluster`` argument.
    """

    def __init__(
        self,
        *,
        host: object,
        allocator: Allocator,
        mutating: list[MutatingPlugin],
        validating: list[ValidatingPlugin],
        check_fields: FieldCheck,
    ) -> None:
        self._host = host
        self._allocator = allocator
        self._mutating = mutating
        self._validating = validating
        self._check_fields = check_fields

    @property
    def mutates(self) -> bool:
        return bool(self._mutating)

    def admit(
        self,
        t: ResourceType,
        operation: str,
        obj: Obj,
        old: Obj | None,
        *,
        dry_run: bool,
        field_validation: str | None = None,
        warnings: list[str] | None = None,
    ) -> Obj:
        """Defaulting, mutating plugins, validation and validating plugins, in kube-apiserver's order."""
        tidy_metadata(obj)
        if field_validation is not None:
            obj, found = self._check_fields(t, obj, field_validation)
            if warnings is not None:
                warnings.extend(w for w in found if w not in warnings)
        allocator = self._allocator
        apply_defaults(t.kind, obj, allocator)
        meta = obj["metadata"]
        plugins = self._mutating
        if plugins:
            request = AdmissionRequest(
                operation=operation, group=t.group, version=t.version, resource=t.plural, kind=t.kind,
                namespace=meta.get("namespace"), name=meta.get("name"), obj=obj, old=old, dry_run=dry_run,
            )
            for plugin in list(plugins):
                run_plugin(functools.partial(plugin.mutate, request, self._host))
            obj = request.obj if request.obj is not None else obj
            apply_defaults(t.kind, obj, allocator)
        if old is None:
            validate(t.kind, t.group, obj, builtin=not t.custom)
        else:
            validate_update(t.kind, t.group, obj, old, builtin=not t.custom)
        self._run_validating(t, operation, obj, old, dry_run)
        return obj

    def validate_delete(self, t: ResourceType, old: Obj, *, dry_run: bool) -> None:
        """DELETE meets the validating plugins only (``req.obj`` None, ``req.old`` the object)."""
        self._run_validating(t, "DELETE", None, old, dry_run)

    def _run_validating(self, t: ResourceType, operation: str, obj: Obj | None, old: Obj | None, dry_run: bool) -> None:
        plugins = self._validating
        if not plugins:
            return
        meta = (obj or old or {}).get("metadata") or {}
        request = AdmissionRequest(
            operation=operation, group=t.group, version=t.version, resource=t.plural, kind=t.kind,
            namespace=meta.get("namespace"), name=meta.get("name"), obj=obj, old=old, dry_run=dry_run,
        )
        for plugin in list(plugins):
            run_plugin(functools.partial(plugin.validate, request, self._host))


def run_plugin(call: Callable[[], None]) -> None:
    try:
        call()
    except AdmissionDenied as denied:
        raise ApiError(denied.code, denied.reason, denied.message) from denied
    except ApiError:
        raise
    except Exception as e:  # a broken plugin is a failing webhook: 500, as failurePolicy Fail
        raise errors.internal(f"admission plugin failed: {e!r}") from e
