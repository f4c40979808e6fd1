"""A Route53 endpoint for the sandbox: moto's server on 127.0.0.1, seeded with the app's record.

meshops reaches it exactly as it reaches AWS: boto3 or the aws CLI with the endpoint, dummy
credentials and region exported in DIR/env. moto is lax (see the reference: no atomic
batches, no weight range checks, a fake change status); meshops must not rely on it.

One part of that laxness would hide real failures, so the sandbox replaces it with what AWS does
(ChangeResourceRecordSets API reference, route53-and-engines.md §A2/§A3): a batch is applied
whole or not at all; a CREATE of a record that exists (name, type, SetIdentifier) fails with
InvalidChangeBatch "already exists" - what makes a CREATE an atomic create-if-absent, which
meshops's record lock relies on; a DELETE must match the record exactly; and deleting one
weighted record removes only that record (moto removes every record with the SetIdentifier,
across names). Batches are serialised, as Route53 serialises changes to one zone.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ZONE = "example.com."
DEFAULT_RECORD = "app.example.com"
DEFAULT_TTL = 60
DUMMY_REGION = "us-east-1"
DUMMY_KEY = "testing"


_BATCHES = threading.Lock()
_INSTALLING = threading.Lock()
_installed = False


def _key(rrset: dict[str, Any]) -> tuple[str, str, str | None]:
    name = str(rrset.get("Name", "")).lower()
    return (name if name.endswith(".") else name + ".", str(rrset.get("Type", "")).upper(),
            rrset.get("SetIdentifier"))


def _content(rrset: dict[str, Any]) -> tuple[Any, ...]:
    """What a DELETE must match: TTL, values, alias, weight and health check (strings: XML gives strings)."""
    values = rrset.get("ResourceRecords") or rrset.get("records") or []
    values = sorted(str(v["Value"] if isinstance(v, dict) else v) for v in values)
    alias = rrset.get("AliasTarget") or rrset.get("alias_target")
    alias_key = None if not alias else (str(alias.get("HostedZoneId")), str(alias.get("DNSName", "")).lower().rstrip("."),
                                        str(alias.get("EvaluateTargetHealth", "false")).lower())
    ttl = rrset.get("TTL")
    weight = rrset.get("Weight")
    return (None if ttl is None else str(ttl), tuple(values), alias_key, None if weight is None else str(weight),
            rrset.get("HealthCheckId"))


def _existing(zone: Any) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    out = {}
    for r in zone.rrsets:
        data = {"Name": r.name, "Type": r.type, "SetIdentifier": r.set_identifier, "TTL": r.ttl,
                "ResourceRecords": list(r.records or []), "AliasTarget": r.alias_target, "Weight": r.weight,
                "HealthCheckId": r.health_check_id}
        out[_key(data)] = data
    return out


def install_strict_batches() -> None:
    """Make moto's ChangeResourceRecordSets behave as AWS's (module docstring); once per process.

    Under a lock: two sandboxes starting in two threads both saw "not installed" and wrapped
    moto twice, and the second wrapper's read lock then waited on the first's forever.
    """
    global _installed
    with _INSTALLING:
        if not _installed:
            _install()
            _installed = True


def _install() -> None:
    from moto.route53 import exceptions as exc
    from moto.route53.models import Route53Backend

    original = Route53Backend.change_resource_record_sets

    def change(self: Any, zoneid: str, change_list: list[dict[str, Any]]) -> None:
        with _BATCHES:
            zone = self.get_hosted_zone(zoneid)
            state = _existing(zone)
            for value in change_list:
                action, rrset = value.get("Action"), value.get("ResourceRecordSet") or {}
                key = _key(rrset)
                where = f"[name='{key[0]}', type='{key[1]}'" + (f", set-identifier='{key[2]}'" if key[2] else "") + "]"
                if not (key[0] == zone.name.lower() or key[0].endswith("." + zone.name.lower())):
                    raise exc.DnsNameInvalidForZone(name=key[0], zone_name=zone.name)
                if action == "CREATE":
                    if key in state:
                        raise exc.ResourceRecordAlreadyExists(name=key[0], _type=key[1])
                    state[key] = rrset
                elif action == "DELETE":
                    if key not in state:
                        raise exc.InvalidInput(f"Tried to delete resource record set {where} but it was not found")
                    if _content(state[key]) != _content(rrset):
                        raise exc.InvalidInput(f"Tried to delete resource record set {where} but the values "
                                               "provided do not match the current values")
                    del state[key]
                elif action == "UPSERT":
                    state[key] = rrset
            # Valid as a whole: apply it (CREATE/UPSERT replace by name, type and SetIdentifier; a
            # DELETE removes exactly its record).
            for value in change_list:
                rrset = dict(value["ResourceRecordSet"])
                if not rrset["Name"].endswith("."):
                    rrset["Name"] += "."
                if value["Action"] == "DELETE":
                    key = _key(rrset)
                    zone.rrsets = [r for r in zone.rrsets if (r.name.lower(), r.type.upper(), r.set_identifier) != key]
                    continue
                if "ResourceRecords" in rrset:
                    rrset["ResourceRecords"] = [v["Value"] if isinstance(v, dict) else v for v in rrset["ResourceRecords"]]
                zone.upsert_rrset(rrset)
                zone.rr_changes.append(value)

    change.__wrapped__ = original  # type: ignore[attr-defined]
    Route53Backend.change_resource_record_sets = change  # type: ignore[method-assign]
    # A batch is atomic for readers too: Route53 answers ListResourceRecordSets from before or
    # after a change, never from half of it (ChangeResourceRecordSets API reference: "all of the
    # changes are made, or none"). moto's list walks the zone while a batch may be rewriting it;
    # reading under the batch lock gives AWS's picture (a DNS observer would otherwise see a
    # conversion's DELETE without its CREATEs, or one weight of a shift without the other).
    listing = Route53Backend.list_resource_record_sets

    def list_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _BATCHES:
            return listing(self, *args, **kwargs)

    list_records.__wrapped__ = listing  # type: ignore[attr-defined]
    Route53Backend.list_resource_record_sets = list_records  # type: ignore[method-assign]
    _install_health_check_references(Route53Backend, exc.Route53ClientError)


def _install_health_check_references(backend: Any, error: Any) -> None:
    """CreateHealthCheck's CallerReference as AWS has it (CreateHealthCheck API reference,
    CallerReference): the same reference and settings again return the existing check instead
    of a second one (what makes a create retried after a lost answer safe); the same reference
    with other settings, or the reference of a deleted check, is HealthCheckAlreadyExists (409).
    moto creates a new check for every request."""
    create, delete = backend.create_health_check, backend.delete_health_check
    settings: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (reference, settings)
    deleted: set[str] = set()

    def create_check(self: Any, caller_reference: str, health_check_args: dict[str, Any]) -> Any:
        with _BATCHES:
            if caller_reference in deleted:
                raise error("HealthCheckAlreadyExists", f"A health check with CallerReference {caller_reference} "
                            "was deleted; its reference cannot be used again")
            for check_id, (ref, args) in settings.items():
                if ref == caller_reference and check_id in self.health_checks:
                    if args != health_check_args:
                        raise error("HealthCheckAlreadyExists", f"A health check with CallerReference "
                                    f"{caller_reference} exists with other settings")
                    return self.health_checks[check_id]
            made = create(self, caller_reference, health_check_args)
            settings[made.id] = (caller_reference, dict(health_check_args))
            return made

    def delete_check(self: Any, health_check_id: str) -> None:
        with _BATCHES:
            if health_check_id in settings and health_check_id in self.health_checks:
                deleted.add(settings[health_check_id][0])
            delete(self, health_check_id)

    backend.create_health_check = create_check
    backend.delete_health_check = delete_check


@dataclass
class Route53Sandbox:
    zone: str = DEFAULT_ZONE
    record: str = DEFAULT_RECORD
    ttl: int = DEFAULT_TTL
    endpoint: str = ""
    zone_id: str = ""
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        """Start moto in a thread of this process and return its URL."""
        from moto.server import ThreadedMotoServer

        install_strict_batches()
        # werkzeug logs every request at INFO to stderr; the sandbox log does not need them.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "route53",
            endpoint_url=self.endpoint,
            region_name=DUMMY_REGION,
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_KEY,
        )

    def seed(self, target_hostname: str) -> str:
        """Create the hosted zone and a simple CNAME `record` -> `target_hostname`; returns the zone id."""
        r53 = self.client()
        zone_name = self.zone if self.zone.endswith(".") else self.zone + "."
        existing = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == zone_name]
        if existing:
            self.zone_id = existing[0]["Id"].split("/")[-1]
        else:
            created = r53.create_hosted_zone(Name=zone_name, CallerReference=str(uuid.uuid4()))
            self.zone_id = created["HostedZone"]["Id"].split("/")[-1]
        record = self.record if self.record.endswith(".") else self.record + "."
        r53.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch={
                "Comment": "meshops sandbox: the app record starts on the first cluster",
                "Changes": [{
                    "Action": "UPSERT",
                    "ResourceRecordSet": {"Name": record, "Type": "CNAME", "TTL": self.ttl,
                                          "ResourceRecords": [{"Value": target_hostname}]},
                }],
            },
        )
        return self.zone_id

    def env(self) -> dict[str, str]:
        """What boto3 and the aws CLI need (AWS_ENDPOINT_URL_ROUTE_53 is the service-specific override)."""
        return {
            "AWS_ENDPOINT_URL_ROUTE_53": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": DUMMY_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
            "AWS_DEFAULT_REGION": DUMMY_REGION,
            "MESHOPS_SANDBOX_HOSTED_ZONE_ID": self.zone_id,
            "MESHOPS_SANDBOX_RECORD": self.record.rstrip("."),
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
