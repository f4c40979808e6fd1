"""An in-memory Route53 that enforces what AWS enforces, where moto does not.

``FakeRoute53`` implements ``Route53Api``. Its rules are written here independently of
``meshops.domain.weights`` (the validator meshops runs before sending), so a hole in that
validator shows up as a rejected batch in tests rather than being mirrored by the fake:

- batches are atomic: every change applies or none does (moto applies them one by one);
- Weight is an integer 0-255 and comes with a SetIdentifier; a name and type is never both
  simple and weighted; a CNAME shares its name with nothing;
- DELETE must match the existing record exactly (moto matches on a subset);
- CREATE of an existing record fails; a HealthCheckId must exist; a health check in use
  cannot be deleted; RequestInterval is 10 or 30, FailureThreshold 1-10;
- a change is PENDING for ``propagation`` seconds of the injected clock, then INSYNC;
- ``fail_next`` makes the next calls of an operation fail with a code (``Throttling``...);
- ``lose_next_answers`` applies the next change batches and then loses their answers
  (``ChangeOutcomeUnknown``), as a read timeout after Route53 accepted a request does;
  ``fail_next_changes_unapplied`` answers the next ones with a 500 that did not apply them
  (also ``ChangeOutcomeUnknown``: the driver cannot tell the two apart).

Change ids are unique (moto returns one constant id for every change).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshops.domain.errors import DriverError, NotFound
from meshops.domain.weights import ChangeBatch, RecordSet, fqdn, validate_batch
from meshops.drivers.route53 import (
    RETRYABLE_CODES,
    ChangeInfo,
    ChangeOutcomeUnknown,
    HealthCheck,
    HealthCheckSpec,
    HostedZone,
    RequestLog,
)


class FakeAwsError(DriverError):
    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"Route53 {op}: {code}: {message}", temporary=code in RETRYABLE_CODES)
        self.code = code


@dataclass
class _Zone:
    zone: HostedZone
    records: dict[tuple[str, str, str | None], dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Change:
    submitted: float
    batch: dict[str, Any]


class FakeRoute53:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, propagation: float = 0.0,
                 validate_client_side: bool = True) -> None:
        self._clock = clock
        self.propagation = propagation
        # The real driver validates before sending; tests of the fake's own rules turn this off.
        self.validate_client_side = validate_client_side
        self._zones: dict[str, _Zone] = {}
        self._changes: dict[str, _Change] = {}
        self._checks: dict[str, HealthCheck] = {}
        self._retired: set[str] = set()  # CallerReferences of deleted checks
        self._tags: dict[str, dict[str, str]] = {}
        self._ids = itertools.count(1)
        self._failures: dict[str, list[str]] = {}
        self.requests = 0
        self.log = RequestLog()
        self.batches: list[tuple[str, dict[str, Any]]] = []  # (zone id, ChangeBatch as sent), applied or not
        self.lost_answers = 0  # how many of the next applied change batches lose their answer
        self.unapplied_failures = 0  # how many of the next change batches fail with a 500, not applied

    # ---- test set-up ----------------------------------------------------------------------

    def add_zone(self, name: str, *, private: bool = False) -> str:
        zone_id = f"Z{next(self._ids):012d}"
        self._zones[zone_id] = _Zone(zone=HostedZone(id=zone_id, name=fqdn(name), private=private))
        return zone_id

    def put(self, zone_id: str, record: RecordSet) -> None:
        """Set a record directly (no rules): the state a test starts from."""
        self._zones[zone_id].records[record.key] = record.to_aws()

    def records(self, zone_id: str) -> list[RecordSet]:
        return [RecordSet.from_aws(r) for r in self._zones[zone_id].records.values()]

    def lose_next_answers(self, times: int = 1) -> None:
        self.lost_answers += times

    def fail_next_changes_unapplied(self, times: int = 1) -> None:
        self.unapplied_failures += times

    def fail_next(self, op: str, code: str = "Throttling", times: int = 1) -> None:
        self._failures.setdefault(op, []).extend([code] * times)

    # ---- plumbing -------------------------------------------------------------------------

    def _request(self, op: str) -> None:
        self.requests += 1
        pending = self._failures.get(op)
        if pending:
            code = pending.pop(0)
            self.log.add(self._clock(), op, code)
            raise FakeAwsError(op, code, "injected by the test")
        self.log.add(self._clock(), op, "ok")

    def _zone(self, op: str, zone_id: str) -> _Zone:
        z = self._zones.get(zone_id)
        if z is None:
            raise NotFound(f"Route53 {op}: NoSuchHostedZone: no hosted zone {zone_id}")
        return z

    # ---- Route53Api -----------------------------------------------------------------------

    def find_zone(self, zone: str) -> HostedZone:
        self._request("list_hosted_zones_by_name")
        if zone in self._zones:
            return self._zones[zone].zone
        found = [z.zone for z in self._zones.values() if z.zone.name == fqdn(zone)]
        if not found:
            raise NotFound(f"Route53 has no hosted zone {fqdn(zone)}")
        return found[0]

    def list_records(self, zone_id: str, name: str) -> list[RecordSet]:
        self._request("list_resource_record_sets")
        z = self._zone("list_resource_record_sets", zone_id)
        return [RecordSet.from_aws(r) for k, r in sorted(z.records.items(), key=lambda kv: str(kv[0]))
                if k[0] == fqdn(name)]

    def change(self, zone_id: str, batch: ChangeBatch, *, current: Sequence[RecordSet]) -> ChangeInfo:
        if self.validate_client_side:
            validate_batch(batch, current)
        self._request("change_resource_record_sets")
        z = self._zone("change_resource_record_sets", zone_id)
        if self.unapplied_failures > 0:
            self.unapplied_failures -= 1
            raise ChangeOutcomeUnknown("Route53 change_resource_record_sets: InternalFailure: injected; the change "
                                       "may or may not have been applied")
        sent = batch.to_aws()
        self.batches.append((zone_id, sent))
        z.records = self._apply(z, sent)  # all or nothing: _apply works on a copy
        change_id = f"C{next(self._ids):012d}"
        self._changes[change_id] = _Change(submitted=self._clock(), batch=sent)
        if self.lost_answers > 0:
            self.lost_answers -= 1
            raise ChangeOutcomeUnknown("Route53 change_resource_record_sets: the answer was lost (ReadTimeoutError)")
        return ChangeInfo(id=change_id, status=self._status(change_id))

    def get_change(self, change_id: str) -> ChangeInfo:
        self._request("get_change")
        cid = change_id.rsplit("/", 1)[-1]
        if cid not in self._changes:
            raise NotFound(f"Route53 get_change: NoSuchChange: {change_id}")
        return ChangeInfo(id=cid, status=self._status(cid))

    def _status(self, change_id: str) -> str:
        return "INSYNC" if self._clock() - self._changes[change_id].submitted >= self.propagation else "PENDING"

    def _apply(self, z: _Zone, sent: dict[str, Any]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
        records = dict(z.records)
        errors: list[str] = []
        changes = sent.get("Changes") or []
        if not changes:
            errors.append("no changes")
        touched: set[str] = set()
        for c in changes:
            rr = c["ResourceRecordSet"]
            name = str(rr["Name"]).lower()
            if not name.endswith("."):
                name += "."
            if not (name == z.zone.name or name.endswith("." + z.zone.name)):
                errors.append(f"{name} is not in zone {z.zone.name}")
            touched.add(name)
            key = (name, str(rr["Type"]).upper(), rr.get("SetIdentifier"))
            weight = rr.get("Weight")
            if "Weight" in rr and (type(weight) is not int or not 0 <= weight <= 255):
                errors.append(f"Invalid weight {weight!r} for {name}")
            if ("SetIdentifier" in rr) != ("Weight" in rr):
                errors.append(f"{name}: SetIdentifier and Weight go together")
            hc = rr.get("HealthCheckId")
            if hc is not None and hc not in self._checks:
                errors.append(f"health check {hc} does not exist")
            if "AliasTarget" not in rr and "SetIdentifier" in rr and len(rr.get("ResourceRecords") or []) != 1:
                errors.append(f"{name}: a weighted record holds exactly one value")
            action = c["Action"]
            if action == "DELETE":
                if records.get(key) != rr:
                    errors.append(f"Tried to delete resource record set [name='{name}', type='{key[1]}', "
                                  f"set-identifier='{key[2]}'] but it was not found or the values provided do not match")
                else:
                    del records[key]
            elif action == "CREATE":
                if key in records:
                    errors.append(f"Tried to create resource record set {key} but it already exists")
                else:
                    records[key] = rr
            elif action == "UPSERT":
                records[key] = rr
            else:
                errors.append(f"unknown action {action}")
        for name in touched:
            at = [(k, r) for k, r in records.items() if k[0] == name]
            types = {k[1] for k, _ in at}
            if "CNAME" in types and len(types) > 1:
                errors.append(f"RRSet of type CNAME with DNS name {name} is not permitted as it conflicts with other records")
            for rtype in types:
                group = [k for k, _ in at if k[1] == rtype]
                simple = [k for k in group if k[2] is None]
                if simple and len(group) > len(simple):
                    errors.append(f"RRSet with DNS name {name}, type {rtype} cannot be created as a non-weighted "
                                  "set exists with the same name and type")
        if errors:
            raise FakeAwsError("change_resource_record_sets", "InvalidChangeBatch", "; ".join(errors))
        return records

    # ---- health checks ----------------------------------------------------------------------

    def list_health_checks(self) -> list[HealthCheck]:
        self._request("list_health_checks")
        return list(self._checks.values())

    def create_health_check(self, caller_reference: str, spec: HealthCheckSpec, *, tags: dict[str, str]) -> HealthCheck:
        self._request("create_health_check")
        config = spec.to_aws()
        if config["RequestInterval"] not in (10, 30) or not 1 <= config["FailureThreshold"] <= 10:
            raise FakeAwsError("create_health_check", "InvalidInput", "RequestInterval or FailureThreshold")
        if caller_reference in self._retired:
            # AWS: the reference of a deleted check is refused whatever the settings
            # (CreateHealthCheck API reference, CallerReference).
            raise FakeAwsError("create_health_check", "HealthCheckAlreadyExists", caller_reference)
        for check in self._checks.values():
            if check.caller_reference == caller_reference:
                if check.config != config:
                    raise FakeAwsError("create_health_check", "HealthCheckAlreadyExists", caller_reference)
                return check
        check = HealthCheck(id=f"hc-{next(self._ids):08d}", config=config, caller_reference=caller_reference)
        self._checks[check.id] = check
        if tags:
            self._request("change_tags_for_resource")
            self._tags[check.id] = dict(tags)
        return check

    def delete_health_check(self, health_check_id: str) -> bool:
        self._request("delete_health_check")
        if health_check_id not in self._checks:
            return False
        for z in self._zones.values():
            if any(r.get("HealthCheckId") == health_check_id for r in z.records.values()):
                raise FakeAwsError("delete_health_check", "HealthCheckInUse", health_check_id)
        self._retired.add(self._checks.pop(health_check_id).caller_reference)
        self._tags.pop(health_check_id, None)
        return True

    def health_check_tags(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        for _ in range(0, max(1, len(ids)), 10):
            self._request("list_tags_for_resources")
        return {i: dict(self._tags.get(i, {})) for i in ids if i in self._checks}
