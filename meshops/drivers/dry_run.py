"""Dry-run as a driver mode: ``DryRunDrivers`` reads through to the real drivers and records
every write instead of making it (as invoke's ``run(..., dry=True)`` echoes instead of running).

``meshops plan`` and ``--dry-run`` hand steps this set, so a step that writes by mistake while
being planned (a read-only step really runs during a plan) changes nothing: the write is in
``writes`` for the plan to show. Prometheus and HTTP probes only read and pass through.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from meshops.domain.errors import NotFound
from meshops.domain.weights import ChangeBatch, RecordSet
from meshops.drivers.api import Drivers
from meshops.drivers.elb_api import ElbApi
from meshops.drivers.http_api import HttpProbeApi
from meshops.drivers.istioctl_api import IstioctlApi, IstioctlResult
from meshops.drivers.kube_api import KubeApi, Obj, ObjectList, PatchType, WatchEvent
from meshops.drivers.kube_waits import Cache
from meshops.drivers.prometheus_api import PrometheusApi
from meshops.drivers.route53_api import ChangeInfo, HealthCheck, HealthCheckSpec, HostedZone, Route53Api


@dataclass(frozen=True, kw_only=True)
class RecordedWrite:
    """A write a dry run did not make."""

    driver: str  # kube | istioctl | route53
    action: str
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.driver} {self.action} {self.target}" + (f" ({self.detail})" if self.detail else "")


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[RecordedWrite] = []
        self._lock = threading.Lock()

    def add(self, write: RecordedWrite) -> None:
        with self._lock:
            self.writes.append(write)


def _where(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class DryRunKube:
    """``KubeApi``: gets, lists and watches reach the cluster; creates, replaces, patches and deletes
    are recorded and answered with what the server would most likely say."""

    def __init__(self, inner: KubeApi, recorder: _Recorder) -> None:
        self._inner = inner
        self._rec = recorder
        self.context = inner.context

    def server_version(self) -> str:
        return self._inner.server_version()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self._inner.get(api_version, kind, name, namespace)

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> ObjectList:
        return self._inner.list(api_version, kind, namespace, label_selector=label_selector,
                                field_selector=field_selector)

    def watch(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
              field_selector: str | None = None, resource_version: str | None = None,
              timeout: float | None = None) -> Iterator[WatchEvent]:
        return self._inner.watch(api_version, kind, namespace, label_selector=label_selector,
                                 field_selector=field_selector, resource_version=resource_version, timeout=timeout)

    def _record(self, action: str, obj_kind: str, name: str, namespace: str | None, detail: str = "") -> None:
        self._rec.add(RecordedWrite(driver="kube", action=action, target=f"{self.context}: "
                                    + _where(obj_kind, name, namespace), detail=detail))

    def create(self, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        self._record("create", str(obj.get("kind")), str(meta.get("name") or meta.get("generateName") or "?"),
                     meta.get("namespace"))
        return obj

    def replace(self, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        self._record("replace", str(obj.get("kind")), str(meta.get("name")), meta.get("namespace"))
        return obj

    def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: PatchType = "merge", subresource: str | None = None) -> Obj:
        self._record("patch", kind, name, namespace, detail=patch_type + (f" {subresource}" if subresource else ""))
        current = self._inner.get(api_version, kind, name, namespace)
        if current is None:
            raise NotFound(f"{_where(kind, name, namespace)} not found")
        return current

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation: str = "Background") -> bool:
        self._record("delete", kind, name, namespace)
        return self._inner.get(api_version, kind, name, namespace) is not None


# istioctl commands that only read (the first words of the argument list); anything else is a write.
_ISTIOCTL_READS: tuple[tuple[str, ...], ...] = (
    ("version",), ("analyze",), ("manifest",), ("profile",), ("proxy-status",), ("proxy-config",),
    ("verify-install",), ("precheck",), ("x", "precheck"), ("experimental", "precheck"), ("tag", "list"),
    ("tag", "generate"), ("x", "revision", "list"), ("validate",), ("help",), ("--help",),
)


def istioctl_reads(args: Sequence[str]) -> bool:
    words = tuple(a for a in args if not a.startswith("-") or a == "--help")
    return any(words[:len(r)] == r for r in _ISTIOCTL_READS)


class DryRunIstioctl:
    """``IstioctlApi``: read commands run; installs, uninstalls and tag moves are recorded, not run."""

    def __init__(self, inner: IstioctlApi, recorder: _Recorder) -> None:
        self._inner = inner
        self._rec = recorder
        self.path = inner.path
        self.version = inner.version

    def run(self, args: Sequence[str], *, ok_codes: Sequence[int] = (0,), timeout: float = 600.0,
            stdin: str | None = None) -> IstioctlResult:
        if istioctl_reads(args):
            return self._inner.run(args, ok_codes=ok_codes, timeout=timeout, stdin=stdin)
        self._rec.add(RecordedWrite(driver="istioctl", action=" ".join(args[:2]), target=self.version,
                                    detail=" ".join(args[2:8])))
        return IstioctlResult(argv=(self.path, *args), exit_code=0, stdout="", stderr="dry run: not run")


class DryRunRoute53:
    """``Route53Api``: zone and record reads reach AWS; change batches and health checks are recorded."""

    def __init__(self, inner: Route53Api, recorder: _Recorder) -> None:
        self._inner = inner
        self._rec = recorder

    @property
    def requests(self) -> int:
        return self._inner.requests

    def find_zone(self, zone: str) -> HostedZone:
        return self._inner.find_zone(zone)

    def list_records(self, zone_id: str, name: str) -> list[RecordSet]:
        return self._inner.list_records(zone_id, name)

    def change(self, zone_id: str, batch: ChangeBatch, *, current: Sequence[RecordSet]) -> ChangeInfo:
        self._rec.add(RecordedWrite(driver="route53", action="change", target=zone_id, detail=batch.describe()))
        return ChangeInfo(id="dry-run", status="INSYNC")

    def get_change(self, change_id: str) -> ChangeInfo:
        if change_id == "dry-run":
            return ChangeInfo(id=change_id, status="INSYNC")
        return self._inner.get_change(change_id)

    def list_health_checks(self) -> list[HealthCheck]:
        return self._inner.list_health_checks()

    def create_health_check(self, caller_reference: str, spec: HealthCheckSpec, *,
                            tags: dict[str, str]) -> HealthCheck:
        self._rec.add(RecordedWrite(driver="route53", action="create_health_check", target=caller_reference))
        return HealthCheck(id=f"dry-run-{caller_reference}", config=spec.to_aws(), caller_reference=caller_reference)

    def delete_health_check(self, health_check_id: str) -> bool:
        self._rec.add(RecordedWrite(driver="route53", action="delete_health_check", target=health_check_id))
        return True

    def health_check_tags(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return self._inner.health_check_tags(ids)


class DryRunDrivers:
    """``Drivers`` over another set: reads through, writes recorded in ``writes``."""

    def __init__(self, inner: Drivers) -> None:
        self._inner = inner
        self._rec = _Recorder()
        self._wrapped: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    @property
    def writes(self) -> list[RecordedWrite]:
        return list(self._rec.writes)

    def _wrap(self, key: tuple[str, ...], inner: Any, cls: Any) -> Any:
        with self._lock:
            if key not in self._wrapped:
                self._wrapped[key] = cls(inner, self._rec)
            return self._wrapped[key]

    @property
    def kube(self) -> KubeApi:
        return self.kube_for(None)

    def kube_for(self, context: str | None = None) -> KubeApi:
        inner = self._inner.kube_for(context)
        wrapped: KubeApi = self._wrap(("kube", str(id(inner))), inner, DryRunKube)
        return wrapped

    def workload_cache(self, context: str | None = None) -> Cache:
        return self._inner.workload_cache(context)  # informers only list and watch

    def istioctl(self, version: str | None = None, *, path: str | None = None) -> IstioctlApi:
        inner = self._inner.istioctl(version, path=path)
        wrapped: IstioctlApi = self._wrap(("istioctl", str(id(inner))), inner, DryRunIstioctl)
        return wrapped

    def istioctl_versions(self) -> dict[str, str]:
        return self._inner.istioctl_versions()

    def route53(self) -> Route53Api:
        inner = self._inner.route53()
        wrapped: Route53Api = self._wrap(("route53",), inner, DryRunRoute53)
        return wrapped

    def prometheus(self, url: str) -> PrometheusApi:
        return self._inner.prometheus(url)

    def http(self) -> HttpProbeApi:
        return self._inner.http()

    def elb(self) -> ElbApi:
        return self._inner.elb()  # read-only: nothing to hold back
