"""What steps may ask of Route53: the ``Route53Api`` protocol and its plain values.

``Route53Client`` (route53.py) implements it over boto3, ``FakeRoute53`` (route53_fake.py) in
memory. Steps import this module only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meshops.domain.errors import BadInput, DriverError
from meshops.domain.weights import ChangeBatch, RecordSet


class ChangeOutcomeUnknown(DriverError):
    """A ChangeResourceRecordSets whose answer was lost after it was sent: it may have been applied.

    Never retried by the driver: a batch with a CREATE or an exact DELETE fails when applied
    twice, so the caller reads the records back before deciding to send it again.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True)


@dataclass(frozen=True, kw_only=True)
class HostedZone:
    id: str  # without the /hostedzone/ prefix
    name: str
    private: bool = False


@dataclass(frozen=True, kw_only=True)
class ChangeInfo:
    id: str
    status: str  # PENDING | INSYNC


@dataclass(frozen=True, kw_only=True)
class HealthCheckSpec:
    """What a Route53 health check checks. ``RequestInterval`` and ``Type`` cannot change later."""

    type: str = "HTTP"  # HTTP | HTTPS | TCP
    fqdn: str | None = None
    ip: str | None = None
    port: int = 80
    path: str = "/"
    interval: int = 30  # 10 or 30
    threshold: int = 3  # 1-10

    def __post_init__(self) -> None:
        problems = []
        if self.type not in ("HTTP", "HTTPS", "TCP"):
            problems.append(f"type {self.type!r} (HTTP, HTTPS or TCP)")
        if (self.fqdn is None) == (self.ip is None):
            problems.append("exactly one of a hostname or an IP address")
        if not 1 <= self.port <= 65535:
            problems.append(f"port {self.port}")
        if self.interval not in (10, 30):
            problems.append(f"interval {self.interval} (10 or 30 seconds)")
        if not 1 <= self.threshold <= 10:
            problems.append(f"failure threshold {self.threshold} (1-10)")
        if self.type != "TCP" and not self.path.startswith("/"):
            problems.append(f"path {self.path!r} (must start with /)")
        if problems:
            raise BadInput("invalid Route53 health check: " + ", ".join(problems))

    def to_aws(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": self.type, "Port": self.port, "RequestInterval": self.interval,
                               "FailureThreshold": self.threshold}
        if self.fqdn is not None:
            out["FullyQualifiedDomainName"] = self.fqdn.rstrip(".")
        if self.ip is not None:
            out["IPAddress"] = self.ip
        if self.type != "TCP":
            out["ResourcePath"] = self.path
        if self.type == "HTTPS":
            out["EnableSNI"] = True
        return out

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether an existing check's HealthCheckConfig checks the same thing the same way."""
        if config.get("Inverted") or config.get("Disabled"):
            return False
        want = self.to_aws()
        for key, value in want.items():
            have = config.get(key)
            if key == "FullyQualifiedDomainName":
                have = str(have or "").lower().rstrip(".")
                value = str(value).lower()
            if key == "EnableSNI":
                continue
            if have != value:
                return False
        return True


@dataclass(frozen=True, kw_only=True)
class HealthCheck:
    id: str
    config: dict[str, Any]
    caller_reference: str = ""


class Route53Api(Protocol):
    """What steps ask of Route53. ``requests`` counts every HTTP request made (retries included)."""

    requests: int

    def find_zone(self, zone: str) -> HostedZone: ...
    def list_records(self, zone_id: str, name: str) -> list[RecordSet]: ...
    def change(self, zone_id: str, batch: ChangeBatch, *, current: Sequence[RecordSet]) -> ChangeInfo: ...
    def get_change(self, change_id: str) -> ChangeInfo: ...
    def list_health_checks(self) -> list[HealthCheck]: ...
    def create_health_check(self, caller_reference: str, spec: HealthCheckSpec, *,
                            tags: dict[str, str]) -> HealthCheck: ...
    def delete_health_check(self, health_check_id: str) -> bool: ...
    def health_check_tags(self, ids: Sequence[str]) -> dict[str, dict[str, str]]: ...
