"""Wait for a condition on a few objects: list, evaluate, and block on a watch until the next change.

For one-off waits (an install's Deployments, one workload's rollout) where an informer cache
(``meshops.drivers.kube_waits``) would be more machinery than the wait needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from meshops.domain.errors import DriverError
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops.context import StepContext

T = TypeVar("T")


def watch_until(ctx: StepContext, kube: KubeApi, api_version: str, kind: str, namespace: str, *,
                evaluate: Callable[[list[Obj]], T | None], timeout: float, label_selector: str | None = None,
                name: str | None = None) -> T | None:
    """``evaluate(objects)`` after every change until it returns a value; None once ``timeout`` is spent.

    With ``name``, one object is read with ``get`` (objects is empty once it is gone), so the
    wait needs no right to list the namespace. A cut watch falls back to a short sleep and a
    fresh read, never to a tight polling loop.
    """
    end = ctx.clock() + ctx.wait_budget(timeout)
    field_selector = f"metadata.name={name}" if name else None
    while True:
        if name is not None:
            one = kube.get(api_version, kind, name, namespace)
            items = [] if one is None else [one]
            resource_version = None if one is None else (one.get("metadata") or {}).get("resourceVersion")
        else:
            listed = kube.list(api_version, kind, namespace, label_selector=label_selector)
            items, resource_version = listed.items, listed.resource_version
        for obj in items:
            obj.setdefault("kind", kind)
        result = evaluate(items)
        if result is not None:
            return result
        left = end - ctx.clock()
        if left <= 0:
            return None
        ctx.check()
        try:
            for _ in kube.watch(api_version, kind, namespace, label_selector=label_selector,
                                field_selector=field_selector, resource_version=resource_version,
                                timeout=min(left, 30.0)):
                break  # any change: list again
        except DriverError:
            ctx.sleep(min(1.0, max(0.0, left)))
