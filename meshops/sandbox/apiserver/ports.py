"""The seams of the resource-API layer: what the verbs need from admission, and what the
helper modules (apply, deletion, scale) need from the verbs.

The API server is layered (see ``docs/architecture.md``): store and resource API at the bottom,
controllers and admission above them, the HTTP server above those, ``Cluster`` on top wiring
them together. A lower layer names what it needs from a higher one as a Protocol here, and
``Cluster`` hands in the object that fulfils it, so no module imports one above it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .kinds import GroupResource, ResourceType
from .store import Store, StoredVersion

Obj = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ListResult:
    versions: builtins.list[StoredVersion]
    resource_version: int
    continue_token: str | None
    remaining: int | None


class Admitter(Protocol):
    """Admission as the verbs see it (``admission.Admission`` is the one the cluster builds)."""

    @property
    def mutates(self) -> bool:
        """True when a mutating plugin is registered (it may edit what it is given in place)."""
        ...

    def admit(
        self,
        t: ResourceType,
        operation: str,
        obj: Obj,
        old: Obj | None,
        *,
        dry_run: bool,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
    ) -> Obj: ...

    def validate_delete(self, t: ResourceType, old: Obj, *, dry_run: bool) -> None: ...


class ResourceVerbs(Protocol):
    """What apply, deletion and scale call back into (``api.ResourceApi`` fulfils it)."""

    @property
    def store(self) -> Store: ...

    @property
    def admission(self) -> Admitter: ...

    def get(self, rt: ResourceType | GroupResource, namespace: str | None, name: str) -> StoredVersion: ...

    def list(
        self,
        rt: ResourceType | GroupResource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult: ...

    def create(
        self,
        rt: ResourceType | GroupResource,
        body: Obj,
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        owned: bool = False,
    ) -> StoredVersion: ...

    def read_modify_write(
        self,
        t: ResourceType,
        namespace: str | None,
        name: str,
        change: Callable[[Obj], Obj],
        wanted_rv: int | None,
        *,
        subresource: str | None,
        dry_run: bool,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        fresh: bool = False,
    ) -> StoredVersion: ...
