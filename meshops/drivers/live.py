"""``LiveDrivers``: the one ``Drivers`` that talks to real systems, built from ``DriverSettings``.

Each driver is built on first use, so a command that never touches AWS never imports boto3,
and kept for the life of this instance: one Kubernetes client per context, one istioctl per
(version, path), one Prometheus client per URL, one Route53 client, one HTTP prober.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from typing import TypeVar

from meshops.domain.errors import BadInput
from meshops.drivers.api import DriverSettings, prometheus_key
from meshops.drivers.aws_session import AwsSession
from meshops.drivers.elb_api import ElbApi
from meshops.drivers.http_api import HttpProbeApi
from meshops.drivers.istioctl_api import IstioctlApi
from meshops.drivers.kube_api import KubeApi
from meshops.drivers.kube_waits import Cache
from meshops.drivers.prometheus_api import PrometheusApi
from meshops.drivers.route53_api import Route53Api

T = TypeVar("T")


class LiveDrivers:
    """Satisfies ``meshops.drivers.api.Drivers``. Thread-safe: steps of a wave share it."""

    def __init__(self, settings: DriverSettings | None = None) -> None:
        self.settings = settings or DriverSettings()
        self._cache: dict[tuple[str, ...], object] = {}
        self._lock = threading.RLock()

    def _once(self, key: tuple[str, ...], build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            found: T = self._cache[key]  # type: ignore[assignment]
            return found

    # ---- Kubernetes ------------------------------------------------------------------------

    def kube_for(self, context: str | None = None) -> KubeApi:
        ctx = context or self.settings.context

        def build() -> KubeApi:
            from meshops.drivers.kube import KubeClient

            return KubeClient(kubeconfig=self.settings.kubeconfig, context=ctx,
                              qps=self.settings.qps, burst=self.settings.burst)

        return self._once(("kube", ctx or ""), build)

    @property
    def kube(self) -> KubeApi:
        return self.kube_for(None)

    def workload_cache(self, context: str | None = None) -> Cache:
        ctx = context or self.settings.context
        return self._once(("cache", ctx or ""), lambda: Cache(self.kube_for(context))).start()

    def close(self) -> None:
        """Stop the informers this set started (the CLI's process ends anyway; tests call it)."""
        with self._lock:
            caches = [c for k, c in self._cache.items() if k[0] == "cache"]
        for cache in caches:
            assert isinstance(cache, Cache)
            cache.stop()

    # ---- istioctl --------------------------------------------------------------------------

    def istioctl(self, version: str | None = None, *, path: str | None = None) -> IstioctlApi:
        def build() -> IstioctlApi:
            from meshops.drivers.istioctl import Istioctl, client_version, find_istioctl

            if version is None:
                found = path or shutil.which("istioctl")
                if not found:
                    raise BadInput("no istioctl on PATH", hint="install istioctl, or pass --istioctl PATH")
                exe, ver = found, client_version(found) or ""
            else:
                exe, ver = find_istioctl(version, explicit=path or None), version
            return Istioctl(exe, version=ver, kubeconfig=self.settings.kubeconfig, context=self.settings.context)

        return self._once(("istioctl", version or "", path or ""), build)

    def istioctl_versions(self) -> dict[str, str]:
        from meshops.drivers.istioctl import installed_istioctls

        return installed_istioctls()

    # ---- AWS, Prometheus, HTTP ---------------------------------------------------------------

    def aws_session(self) -> AwsSession:
        """The one boto3 session of this command's AWS clients (Route53, ELB, the identity check)."""
        return self._once(("aws",), lambda: AwsSession(profile=self.settings.aws_profile))

    def route53(self) -> Route53Api:
        def build() -> Route53Api:
            from meshops.drivers.route53 import Route53Client

            return Route53Client(profile=self.settings.aws_profile, region=self.settings.aws_region,
                                 aws=self.aws_session())

        return self._once(("route53",), build)

    def prometheus(self, url: str) -> PrometheusApi:
        def build() -> PrometheusApi:
            from meshops.drivers.prometheus import PrometheusClient

            return PrometheusClient(url, timeout=self.settings.prometheus_timeout,
                                    bearer_token=self.settings.prometheus_token_for(url))

        return self._once(("prometheus", prometheus_key(url)), build)

    def http(self) -> HttpProbeApi:
        def build() -> HttpProbeApi:
            from meshops.drivers.http_probe import HttpProber

            return HttpProber()

        return self._once(("http",), build)

    def elb(self) -> ElbApi:
        def build() -> ElbApi:
            from meshops.drivers.elb import ElbClient

            return ElbClient(default_region=self.settings.aws_region, profile=self.settings.aws_profile,
                             aws=self.aws_session())

        return self._once(("elb",), build)
