"""Route53 behind a small interface: zones, the records at one name, change batches, health checks.

``Route53Api`` is what steps use; ``Route53Client`` implements it over boto3 and
``FakeRoute53`` (route53_fake.py) in memory with AWS's rules enforced. Rules of this driver:

- every batch is validated by ``meshops.domain.weights.validate_batch`` against a snapshot of
  the records it touches before it is sent (``change(..., current=...)``): moto accepts
  batches AWS refuses, and AWS refuses them only after a round trip;
- a client-side token bucket, retries included, shaped like Route53's own: since 2026-07-30
  Route53 throttles each account with token buckets (account-wide burst 50, refill 10/s;
  ``route53-and-engines.md`` "API rate limits", from AWS's throttling page). Ours is smaller:
  refill ``max_rps`` (10/s), burst ``burst`` (10). A switchover's setup (~15 requests: zone,
  record, ownership, lock, health checks and their tags, the first batches) so goes out at
  once instead of stalling ~0.7 s behind a one-second window, and the sustained rate stays
  10/s: in any ``w`` seconds, at most ``burst + max_rps * w`` requests;
- ``Throttling``, ``PriorRequestNotComplete`` and dropped connections are retried with
  exponential backoff and jitter; botocore's own retries are off so every attempt passes the
  limiter and is counted;
- missing or rejected credentials are ``BadInput`` (exit 2), not a failure mid-run.

``GetHealthCheckStatus`` is deliberately absent: AWS calls it a development tool, and
meshops gates on its own probes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshops.domain.errors import BadInput, DriverError, NotFound
from meshops.domain.weights import ChangeBatch, RecordSet, fqdn, validate_batch
from meshops.drivers.aws_session import AwsSession
from meshops.drivers.ratelimit import TokenBucket
from meshops.drivers.route53_api import ChangeInfo as ChangeInfo
from meshops.drivers.route53_api import ChangeOutcomeUnknown as ChangeOutcomeUnknown
from meshops.drivers.route53_api import HealthCheck as HealthCheck
from meshops.drivers.route53_api import HealthCheckSpec as HealthCheckSpec
from meshops.drivers.route53_api import HostedZone as HostedZone
from meshops.drivers.route53_api import Route53Api as Route53Api

RETRYABLE_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded",
                             "ServiceUnavailable"})
# A 500 (AWS Common Errors: "InternalFailure ... the request processing has failed because of an
# unknown error", HTTP 500) says nothing about whether the request took effect: a read is simply
# asked again; a change is reported as of unknown outcome, so its caller reads the records back
# before deciding (ops/switchover_common.send, route53_lock) instead of failing the step.
SERVER_FAULT_CODES = frozenset({"InternalFailure", "InternalError", "InternalServerError"})
_CREDENTIAL_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                               "AccessDenied", "AccessDeniedException", "ExpiredToken", "InvalidAccessKeyId"})


def zone_id_of(raw: str) -> str:
    return raw.rsplit("/", 1)[-1]


def change_id_of(raw: str) -> str:
    return raw.rsplit("/", 1)[-1]


@dataclass
class RequestLog:
    """Every request the driver made: (monotonic time, operation, outcome). For tests and benchmarks."""

    entries: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, at: float, op: str, outcome: str) -> None:
        self.entries.append((at, op, outcome))

    def max_in_window(self, per: float = 1.0) -> int:
        stamps = sorted(t for t, _, _ in self.entries)
        best, lo = 0, 0
        for hi, t in enumerate(stamps):
            while t - stamps[lo] >= per:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


class Route53Client:
    """``Route53Api`` over boto3. The endpoint and credentials come from the usual AWS chain
    (``AWS_ENDPOINT_URL_ROUTE_53`` or ``AWS_ENDPOINT_URL`` points it at moto or a proxy)."""

    def __init__(self, *, client: Any = None, endpoint_url: str | None = None, max_rps: int = 10, burst: int = 10,
                 max_attempts: int = 8, base_delay: float = 0.2, max_delay: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, timeout: float = 30.0, profile: str | None = None,
                 region: str | None = None, aws: AwsSession | None = None) -> None:
        if client is None:
            from botocore.config import Config

            aws = aws or AwsSession(profile=profile)
            session = aws.session
            _register_aws_credentials(session)
            client = aws.client(
                "route53", endpoint_url=endpoint_url, region_name=region or session.region_name or "us-east-1",
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=min(10.0, timeout),
                              read_timeout=timeout, user_agent_extra="meshops"))
        self._client = client
        self.limiter = TokenBucket(qps=max_rps, burst=burst, clock=clock, sleep=sleep)
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self.max_attempts, self.base_delay, self.max_delay = max_attempts, base_delay, max_delay
        self.requests = 0
        self.retries = 0
        self.log = RequestLog()
        self._zones: dict[str, HostedZone] = {}
        self._lock = threading.Lock()

    # ---- transport ----------------------------------------------------------------------

    def _call(self, op: str, *, idempotent: bool = True, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire()
            with self._lock:
                self.requests += 1
            started = self._clock()
            try:
                result: dict[str, Any] = getattr(self._client, op)(**params)
            except (NoCredentialsError, PartialCredentialsError) as exc:
                self.log.add(started, op, "no-credentials")
                raise BadInput(f"Route53: no usable AWS credentials ({exc})",
                               hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                message = str(exc.response.get("Error", {}).get("Message", ""))
                self.log.add(started, op, code or "error")
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                server_fault = code in SERVER_FAULT_CODES or (status == 500 and code not in RETRYABLE_CODES)
                if server_fault and not idempotent:
                    raise ChangeOutcomeUnknown(f"Route53 {op}: {code or status}: {message}; the change may or "
                                               "may not have been applied") from None
                if (code in RETRYABLE_CODES or server_fault) and attempt < self.max_attempts:
                    self._backoff(attempt)
                    continue
                raise self._translate(op, code, message) from None
            except (ReadTimeoutError, ConnectionClosedError) as exc:
                # Sent, answer lost: only a request that cannot apply twice is sent again blindly.
                self.log.add(started, op, "answer-lost")
                if not idempotent:
                    raise ChangeOutcomeUnknown(f"Route53 {op}: the answer was lost ({type(exc).__name__}); "
                                               "the change may or may not have been applied") from None
                if attempt < self.max_attempts:
                    self._backoff(attempt)
                    continue
                raise DriverError(f"Route53 {op}: no answer: {type(exc).__name__}", temporary=True) from None
            except (EndpointConnectionError, ConnectTimeoutError) as exc:
                self.log.add(started, op, "connection")
                if attempt < self.max_attempts:
                    self._backoff(attempt)
                    continue
                raise DriverError(f"Route53 {op}: cannot reach the endpoint: {type(exc).__name__}",
                                  temporary=True) from None
            self.log.add(started, op, "ok")
            return result

    def _backoff(self, attempt: int) -> None:
        # Exponential backoff with "equal jitter": half the delay fixed, half random, so
        # callers that were throttled together do not come back together.
        with self._lock:
            self.retries += 1
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        self._sleep(cap / 2 + self._rng.uniform(0, cap / 2))

    @staticmethod
    def _translate(op: str, code: str, message: str) -> DriverError | BadInput:
        text = f"Route53 {op}: {code}: {message}"
        if code in _CREDENTIAL_CODES:
            return BadInput(text, hint="check the AWS credentials and their Route53 permissions")
        if code in ("NoSuchHostedZone", "NoSuchHealthCheck", "NoSuchChange"):
            return NotFound(text)
        if code in RETRYABLE_CODES:
            return DriverError(text + " (still throttled after every retry)", temporary=True)
        if code in SERVER_FAULT_CODES:
            return DriverError(text + " (still failing after every retry)", temporary=True)
        return DriverError(text, temporary=False)

    # ---- zones and records ----------------------------------------------------------------

    def find_zone(self, zone: str) -> HostedZone:
        """A zone by name (``example.com``) or by ID; a name held by a public and a private zone is ambiguous.

        Found zones are remembered for the life of this client (one command): a switchover's
        preflight, its record lock and its run all look the same zone up."""
        found = self._zones.get(zone)
        if found is None:
            found = self._zones[zone] = self._find_zone(zone)
        return found

    def _find_zone(self, zone: str) -> HostedZone:
        if "." not in zone.strip("."):
            data = self._call("get_hosted_zone", Id=zone_id_of(zone))["HostedZone"]
            return HostedZone(id=zone_id_of(data["Id"]), name=fqdn(data["Name"]),
                              private=bool((data.get("Config") or {}).get("PrivateZone")))
        name = fqdn(zone)
        data = self._call("list_hosted_zones_by_name", DNSName=name, MaxItems="10")
        found = [z for z in data.get("HostedZones", []) if fqdn(z["Name"]) == name]
        if not found:
            raise NotFound(f"Route53 has no hosted zone {name}")
        if len(found) > 1:
            ids = ", ".join(zone_id_of(z["Id"]) for z in found)
            raise BadInput(f"Route53 has {len(found)} zones named {name} ({ids}); pass --zone with the zone ID")
        z = found[0]
        return HostedZone(id=zone_id_of(z["Id"]), name=name, private=bool((z.get("Config") or {}).get("PrivateZone")))

    def list_records(self, zone_id: str, name: str) -> list[RecordSet]:
        """Every record set at ``name`` (all types and set identifiers)."""
        name = fqdn(name)
        params: dict[str, Any] = {"HostedZoneId": zone_id, "StartRecordName": name, "MaxItems": "300"}
        out: list[RecordSet] = []
        while True:
            data = self._call("list_resource_record_sets", **params)
            for raw in data.get("ResourceRecordSets", []):
                if fqdn(raw["Name"]) != name:
                    return out  # listing starts at name, so the first other name ends it
                out.append(RecordSet.from_aws(raw))
            if not data.get("IsTruncated") or fqdn(data.get("NextRecordName", "")) != name:
                return out
            params.update(StartRecordName=data["NextRecordName"], StartRecordType=data["NextRecordType"])
            if data.get("NextRecordIdentifier"):
                params["StartRecordIdentifier"] = data["NextRecordIdentifier"]

    def change(self, zone_id: str, batch: ChangeBatch, *, current: Sequence[RecordSet]) -> ChangeInfo:
        """Send ``batch`` after validating it against ``current`` (the records it touches, as just read)."""
        validate_batch(batch, current)
        data = self._call("change_resource_record_sets", idempotent=False, HostedZoneId=zone_id,
                          ChangeBatch=batch.to_aws())
        info = data["ChangeInfo"]
        return ChangeInfo(id=change_id_of(info["Id"]), status=str(info["Status"]))

    def get_change(self, change_id: str) -> ChangeInfo:
        info = self._call("get_change", Id=change_id_of(change_id))["ChangeInfo"]
        return ChangeInfo(id=change_id_of(info["Id"]), status=str(info["Status"]))

    # ---- health checks ----------------------------------------------------------------------

    def list_health_checks(self) -> list[HealthCheck]:
        out: list[HealthCheck] = []
        params: dict[str, Any] = {"MaxItems": "100"}
        while True:
            data = self._call("list_health_checks", **params)
            out += [HealthCheck(id=h["Id"], config=dict(h.get("HealthCheckConfig") or {}),
                                caller_reference=str(h.get("CallerReference", ""))) for h in data.get("HealthChecks", [])]
            if not data.get("IsTruncated") or not data.get("NextMarker"):
                return out
            params["Marker"] = data["NextMarker"]

    def create_health_check(self, caller_reference: str, spec: HealthCheckSpec, *, tags: dict[str, str]) -> HealthCheck:
        data = self._call("create_health_check", CallerReference=caller_reference[:64],
                          HealthCheckConfig=spec.to_aws())["HealthCheck"]
        check = HealthCheck(id=data["Id"], config=dict(data.get("HealthCheckConfig") or {}),
                            caller_reference=caller_reference)
        if tags:
            self._call("change_tags_for_resource", ResourceType="healthcheck", ResourceId=check.id,
                       AddTags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())])
        return check

    def delete_health_check(self, health_check_id: str) -> bool:
        try:
            self._call("delete_health_check", HealthCheckId=health_check_id)
        except NotFound:
            return False
        return True

    def health_check_tags(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        ids = list(ids)
        for start in range(0, len(ids), 10):  # the API takes at most 10 ids per request
            data = self._call("list_tags_for_resources", ResourceType="healthcheck", ResourceIds=ids[start:start + 10])
            for tag_set in data.get("ResourceTagSets", []):
                out[tag_set["ResourceId"]] = {t["Key"]: t.get("Value", "") for t in tag_set.get("Tags", [])}
        return out


def _register_aws_credentials(session: Any) -> None:
    """The access key id, secret key and session token of the AWS chain are secrets of the process."""
    from meshops.domain.redact import register_credential

    try:
        creds = session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds is not None else None
    except Exception:  # a broken chain is reported by the first call, with a clear message
        return
    if frozen is not None:
        for value in (frozen.access_key, frozen.secret_key, frozen.token):
            if value:
                register_credential(value)
