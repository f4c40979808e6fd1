"""Test support that ships with meshops: a ``Drivers`` made of fakes, where nothing is implicit.

``FakeDrivers`` hands a step exactly the drivers a test planned: the in-memory fakes of
``meshops.drivers`` (``FakeKube``, ``FakeIstioctl``, ``FakeRoute53``, ``FakePrometheus``) or
anything else satisfying the driver protocols. A driver the test did not plan (a context, an
istioctl version, a Prometheus URL, Route53 or HTTP probes) raises ``UnplannedDriver`` naming
what was asked and what was planned, so a test can never reach a real system by accident::

    from meshops.testing import FakeDrivers
    drivers = FakeDrivers(kube=FakeKube(), istioctl={"1.22.1": FakeIstioctl(version="1.22.1")})
    Engine(store=..., drivers=drivers)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from meshops.domain.errors import BadInput
from meshops.drivers.api import prometheus_key
from meshops.drivers.elb_api import ElbApi
from meshops.drivers.http_api import HttpProbeApi
from meshops.drivers.istioctl_api import IstioctlApi
from meshops.drivers.kube_api import KubeApi
from meshops.drivers.kube_waits import Cache
from meshops.drivers.prometheus_api import PrometheusApi
from meshops.drivers.route53_api import Route53Api

__all__ = ["FakeDrivers", "UnplannedDriver"]


class UnplannedDriver(AssertionError):
    """A step asked for a driver the test did not give ``FakeDrivers``."""


class FakeDrivers:
    """Satisfies ``meshops.drivers.api.Drivers`` from planned fakes.

    ``kube``: the default context's cluster. ``clusters``: clusters by context name; a context
    not among them is refused as a kubeconfig without it would be (``BadInput``).
    ``istioctl``: fakes by version (``path`` is ignored: the fake of that version answers); a
    version not among them is refused as the real set refuses one not on PATH (``BadInput``).
    ``prometheus``: one fake, a list of fakes, or a mapping, keyed by URL (a fake's ``url``).
    """

    def __init__(self, *, kube: KubeApi | None = None, clusters: Mapping[str, KubeApi] | None = None,
                 istioctl: Mapping[str, IstioctlApi] | None = None, route53: Route53Api | None = None,
                 prometheus: PrometheusApi | Iterable[PrometheusApi] | Mapping[str, PrometheusApi] | None = None,
                 http: HttpProbeApi | None = None, elb: ElbApi | None = None) -> None:
        self._kube = kube
        self._clusters = dict(clusters or {})
        # Kept, not copied: a test may plan another version later.
        self._istioctl: Mapping[str, IstioctlApi] = istioctl if istioctl is not None else {}
        self._route53 = route53
        self._http = http
        self._elb = elb
        self._prometheus: dict[str, PrometheusApi] = {}
        if isinstance(prometheus, Mapping):
            self._prometheus = {prometheus_key(url): p for url, p in prometheus.items()}
        elif prometheus is not None:
            fakes: list[PrometheusApi] = (list(prometheus) if isinstance(prometheus, Iterable)
                                          else [prometheus])
            self._prometheus = {prometheus_key(p.url): p for p in fakes}
        # What steps asked for, in order: lets a test assert on the seam itself.
        self.requests: list[str] = []
        self._caches: dict[int, Cache] = {}
        self._lock = threading.Lock()

    def _unplanned(self, what: str, planned: Iterable[str]) -> UnplannedDriver:
        listed = ", ".join(sorted(planned)) or "nothing"
        return UnplannedDriver(f"a step asked for {what}, which this test did not plan (planned: {listed})")

    @property
    def kube(self) -> KubeApi:
        return self.kube_for(None)

    def kube_for(self, context: str | None = None) -> KubeApi:
        self.requests.append(f"kube:{context or ''}")
        if context is None:
            if self._kube is None:
                raise self._unplanned("the default Kubernetes context", self._clusters)
            return self._kube
        if context in self._clusters:
            return self._clusters[context]
        if not self._clusters and self._kube is None:
            raise self._unplanned(f"Kubernetes context {context!r}", ())
        raise BadInput(f"cannot load kubeconfig context {context!r}")

    def workload_cache(self, context: str | None = None) -> Cache:
        kube = self.kube_for(context)
        with self._lock:
            # Keyed by the planned cluster object, which this set keeps alive.
            cache = self._caches.get(id(kube))
            if cache is None:
                cache = self._caches[id(kube)] = Cache(kube)
        return cache.start()

    def close(self) -> None:
        for cache in self._caches.values():
            cache.stop()

    def istioctl(self, version: str | None = None, *, path: str | None = None) -> IstioctlApi:
        self.requests.append(f"istioctl:{version or ''}")
        if version is None:
            if len(self._istioctl) == 1:
                return next(iter(self._istioctl.values()))
            raise self._unplanned("istioctl of any version", self._istioctl)
        if not self._istioctl:
            raise self._unplanned(f"istioctl {version}", ())
        if version not in self._istioctl:
            # Some istioctl planned, not this one: what the real set says when it is not on PATH.
            raise BadInput(f"no istioctl {version} found (the fakes are {', '.join(sorted(self._istioctl))})",
                           hint=f"install istioctl {version} as istioctl-{version} on PATH, or pass --istioctl PATH")
        return self._istioctl[version]

    def istioctl_versions(self) -> dict[str, str]:
        self.requests.append("istioctl-versions")
        return {v: f.path for v, f in sorted(self._istioctl.items())}

    def route53(self) -> Route53Api:
        self.requests.append("route53")
        if self._route53 is None:
            raise self._unplanned("Route53", ())
        return self._route53

    def prometheus(self, url: str) -> PrometheusApi:
        self.requests.append(f"prometheus:{url}")
        found = self._prometheus.get(prometheus_key(url))
        if found is None:
            raise self._unplanned(f"Prometheus at {url}", self._prometheus)
        return found

    def http(self) -> HttpProbeApi:
        self.requests.append("http")
        if self._http is None:
            raise self._unplanned("HTTP probes", ())
        return self._http

    def elb(self) -> ElbApi:
        self.requests.append("elb")
        if self._elb is None:
            raise self._unplanned("Elastic Load Balancing", ())
        return self._elb
