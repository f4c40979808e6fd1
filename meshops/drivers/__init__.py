"""Drivers: the only code that talks to Kubernetes, AWS, Prometheus and subprocesses.

``DriverSet`` builds each driver on first use, so a command that never touches AWS
never imports boto3. Tests hand steps a DriverSet whose factories return fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshops.drivers.kube import KubeApi


@dataclass(frozen=True, kw_only=True)
class DriverSettings:
    kubeconfig: str | None = None
    context: str | None = None
    qps: float = 50.0
    burst: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


class DriverSet:
    def __init__(self, settings: DriverSettings | None = None, *,
                 kube_factory: Callable[[str | None], KubeApi] | None = None,
                 factories: dict[str, Callable[[], Any]] | None = None) -> None:
        self.settings = settings or DriverSettings()
        self._kube_factory = kube_factory
        self._factories = dict(factories or {})
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def kube_for(self, context: str | None = None) -> KubeApi:
        """The cluster behind ``context`` (the default context when None)."""
        key = f"kube:{context or self.settings.context or ''}"
        with self._lock:
            if key not in self._cache:
                if self._kube_factory is not None:
                    self._cache[key] = self._kube_factory(context or self.settings.context)
                else:
                    from meshops.drivers.kube import KubeClient

                    self._cache[key] = KubeClient(kubeconfig=self.settings.kubeconfig,
                                                  context=context or self.settings.context,
                                                  qps=self.settings.qps, burst=self.settings.burst)
            client: KubeApi = self._cache[key]
            return client

    @property
    def kube(self) -> KubeApi:
        return self.kube_for(None)

    def get(self, name: str) -> Any:
        """A named driver (``istioctl``, ``route53``, ``prometheus``...) from its registered factory."""
        with self._lock:
            if name not in self._cache:
                factory = self._factories.get(name)
                if factory is None:
                    raise KeyError(f"no driver {name!r} is configured")
                self._cache[name] = factory()
            return self._cache[name]

    def register(self, name: str, factory: Callable[[], Any]) -> None:
        with self._lock:
            self._factories[name] = factory
            self._cache.pop(name, None)
