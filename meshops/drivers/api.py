"""The seam between steps and the outside world: the ``Drivers`` protocol and its settings.

A step receives one object satisfying ``Drivers`` as ``ctx.drivers`` and asks it for the
driver it needs: ``kube_for(context)``, ``istioctl(version)``, ``route53()``,
``prometheus(url)``, ``http()``, ``elb()``. It never builds a driver itself and never names one by a
string. ``meshops.drivers.live.LiveDrivers`` is the one implementation that talks to real
systems, built from ``DriverSettings`` (which the CLI fills from its options); tests use
``meshops.testing.FakeDrivers``, which refuses any driver a test did not plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from meshops.domain.errors import DriverError
from meshops.drivers.elb_api import ElbApi
from meshops.drivers.http_api import HttpProbeApi
from meshops.drivers.istioctl_api import IstioctlApi
from meshops.drivers.kube_api import KubeApi
from meshops.drivers.kube_waits import Cache
from meshops.drivers.prometheus_api import PrometheusApi
from meshops.drivers.route53_api import Route53Api


def prometheus_key(url: str) -> str:
    """One spelling per Prometheus server, so ``http://p:9090/`` and ``http://p:9090`` share a client and token."""
    return url.strip().rstrip("/")


@dataclass(frozen=True, kw_only=True)
class DriverSettings:
    """How to reach the real systems; filled once by the CLI from its options and environment."""

    kubeconfig: str | None = None
    context: str | None = None
    qps: float = 50.0
    burst: int = 100
    # A bearer token for every Prometheus ($MESHOPS_PROMETHEUS_TOKEN) and per-URL tokens
    # ($MESHOPS_PROMETHEUS_TOKENS) that win over it, so two servers behind different proxies work.
    prometheus_token: str | None = None
    prometheus_tokens: Mapping[str, str] = field(default_factory=dict)
    prometheus_timeout: float = 30.0
    # None leaves boto3's own chain (AWS_PROFILE, AWS_REGION, instance metadata) in charge.
    aws_profile: str | None = None
    aws_region: str | None = None

    def prometheus_token_for(self, url: str) -> str | None:
        key = prometheus_key(url)
        for k, token in self.prometheus_tokens.items():
            if prometheus_key(k) == key:
                return token
        return self.prometheus_token


class Drivers(Protocol):
    """Everything a step may reach outside the process. One instance per command; it owns the
    clients it built (one per context, istioctl version and Prometheus URL) and their caches."""

    @property
    def kube(self) -> KubeApi:
        """The cluster of the default context."""
        ...

    def kube_for(self, context: str | None = None) -> KubeApi:
        """The cluster behind ``context`` (the default context when None)."""
        ...

    def workload_cache(self, context: str | None = None) -> Cache:
        """The running informers (workloads and their pods) of ``context``'s cluster, one per cluster
        for the life of this set: every wave and undo of an upgrade shares one list and one watch per kind."""
        ...

    def istioctl(self, version: str | None = None, *, path: str | None = None) -> IstioctlApi:
        """The istioctl whose client version is exactly ``version`` (``path`` when given and of that
        version, else ``istioctl-<version>`` or ``istioctl`` on PATH); any istioctl on PATH when None."""
        ...

    def istioctl_versions(self) -> dict[str, str]:
        """Version -> path of every istioctl at hand."""
        ...

    def route53(self) -> Route53Api: ...

    def prometheus(self, url: str) -> PrometheusApi:
        """The client of the Prometheus at ``url``, with that URL's bearer token."""
        ...

    def http(self) -> HttpProbeApi: ...

    def elb(self) -> ElbApi:
        """Elastic Load Balancing (read-only): what a load balancer DNS name is (kind, zone ID, listeners)."""
        ...


class NoDrivers:
    """The ``Drivers`` of an engine given none: every request is a clear error, never a real call."""

    def _refuse(self, what: str) -> DriverError:
        return DriverError(f"this run has no drivers, so it cannot reach {what}")

    @property
    def kube(self) -> KubeApi:
        raise self._refuse("Kubernetes")

    def kube_for(self, context: str | None = None) -> KubeApi:
        raise self._refuse(f"Kubernetes context {context or '(default)'}")

    def workload_cache(self, context: str | None = None) -> Cache:
        raise self._refuse(f"Kubernetes context {context or '(default)'}")

    def istioctl(self, version: str | None = None, *, path: str | None = None) -> IstioctlApi:
        raise self._refuse(f"istioctl {version or ''}".strip())

    def istioctl_versions(self) -> dict[str, str]:
        raise self._refuse("istioctl")

    def route53(self) -> Route53Api:
        raise self._refuse("Route53")

    def prometheus(self, url: str) -> PrometheusApi:
        raise self._refuse(f"Prometheus at {url}")

    def http(self) -> HttpProbeApi:
        raise self._refuse("HTTP probes")

    def elb(self) -> ElbApi:
        raise self._refuse("Elastic Load Balancing")
