"""What steps may ask of a Kubernetes cluster: the ``KubeApi`` protocol and its plain values.

Objects are plain dicts (``apiVersion``/``kind``/``metadata``...), addressed by apiVersion
and kind. ``KubeClient`` (kube.py) implements the protocol over HTTP and ``FakeKube``
(kube_fake.py) in memory; steps import this module only, never either implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Obj = dict[str, Any]
PatchType = Literal["merge", "strategic", "json", "apply"]


@dataclass(frozen=True, kw_only=True)
class ObjectList:
    items: list[Obj]
    resource_version: str


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: Obj


class KubeApi(Protocol):
    """What steps may ask of a cluster. ``FakeKube`` (kube_fake.py) implements it in memory."""

    context: str

    def server_version(self) -> str: ...
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...
    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> ObjectList: ...
    def create(self, obj: Obj) -> Obj: ...
    def replace(self, obj: Obj) -> Obj: ...
    def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: PatchType = "merge", subresource: str | None = None) -> Obj: ...
    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation: str = "Background") -> bool: ...
    def watch(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
              field_selector: str | None = None, resource_version: str | None = None,
              timeout: float | None = None) -> Iterator[WatchEvent]: ...
