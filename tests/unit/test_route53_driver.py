"""The Route53 driver (retries, rate limit, validation before sending) and the strict FakeRoute53."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from meshops.domain.errors import BadInput, DriverError
from meshops.domain.weights import Change, ChangeBatch, InvalidBatch, RecordSet, shift_batch
from meshops.drivers.route53 import ChangeOutcomeUnknown, HealthCheckSpec, Route53Client
from meshops.drivers.route53_fake import FakeAwsError, FakeRoute53
from tests.support.fakeclock import FakeClock
from tests.support.switchover import burst_of

NAME = "app.example.com."
SIMPLE = RecordSet(name=NAME, type="CNAME", ttl=60, values=("blue.lb",))
BLUE = RecordSet(name=NAME, type="CNAME", ttl=60, values=("blue.lb",), set_identifier="blue", weight=100)
GREEN = RecordSet(name=NAME, type="CNAME", ttl=60, values=("green.lb",), set_identifier="green", weight=0)


def batch(*changes: tuple[str, RecordSet]) -> ChangeBatch:
    return ChangeBatch(changes=tuple(Change(action=a, record=r) for a, r in changes))  # type: ignore[arg-type]


def stubbed(clock: FakeClock) -> tuple[Route53Client, Stubber]:
    client = boto3.client("route53", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                          config=Config(retries={"total_max_attempts": 1}))
    return Route53Client(client=client, clock=clock, sleep=clock.sleep, rng=random.Random(7)), Stubber(client)


CHANGE_OK: dict[str, Any] = {"ChangeInfo": {"Id": "/change/C1", "Status": "PENDING",
                                            "SubmittedAt": "2026-01-01T00:00:00Z"}}


# ---- the boto3 driver ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["Throttling", "PriorRequestNotComplete"])
def test_throttled_calls_are_retried_with_growing_jittered_backoff(code: str) -> None:
    """Throttling and PriorRequestNotComplete are retried; delays grow and are jittered within bounds."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    for _ in range(4):
        stub.add_client_error("get_change", service_error_code=code, http_status_code=400)
    stub.add_response("get_change", CHANGE_OK, {"Id": "C1"})
    with stub:
        assert r53.get_change("/change/C1").status == "PENDING"
    assert r53.requests == 5 and r53.retries == 4
    backoffs = [s for s in clock.slept]
    assert len(backoffs) == 4
    for attempt, delay in enumerate(backoffs, start=1):
        cap = min(5.0, 0.2 * 2 ** (attempt - 1))
        assert cap / 2 <= delay <= cap
    assert backoffs[-1] > backoffs[0]


def test_retries_give_up_as_a_temporary_driver_error() -> None:
    """After max_attempts throttled answers the driver raises a temporary DriverError."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    for _ in range(r53.max_attempts):
        stub.add_client_error("get_change", service_error_code="Throttling", http_status_code=400)
    with stub, pytest.raises(DriverError, match="still throttled") as err:
        r53.get_change("C1")
    assert err.value.temporary


def test_an_internal_failure_on_a_read_is_retried() -> None:
    """Route53's 500 is InternalFailure (AWS Common Errors): a read is asked again, not failed
    (the chaos suite's switchover runs rolled back on one transient 500 while reading the zone)."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    stub.add_client_error("get_change", service_error_code="InternalFailure", http_status_code=500)
    stub.add_client_error("get_change", service_error_code="InternalFailure", http_status_code=500)
    stub.add_response("get_change", CHANGE_OK, {"Id": "C1"})
    with stub:
        assert r53.get_change("/change/C1").status == "PENDING"
    assert r53.requests == 3 and r53.retries == 2


def test_an_internal_failure_on_a_change_is_of_unknown_outcome() -> None:
    """A 500 to ChangeResourceRecordSets may have applied: never resent blindly, never a plain
    failure, but ChangeOutcomeUnknown, so the caller reads the records back and decides."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    stub.add_client_error("change_resource_record_sets", service_error_code="InternalFailure",
                          http_status_code=500)
    with stub, pytest.raises(ChangeOutcomeUnknown, match="may or may not have been applied"):
        r53.change("Z1", shift_batch((BLUE, GREEN), (90, 10)), current=[BLUE, GREEN])
    assert r53.requests == 1


def test_invalid_change_batch_is_permanent_and_not_retried() -> None:
    """InvalidChangeBatch from Route53 is a permanent error after exactly one request."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    stub.add_client_error("change_resource_record_sets", service_error_code="InvalidChangeBatch",
                          service_message="nope", http_status_code=400)
    with stub, pytest.raises(DriverError, match="InvalidChangeBatch") as err:
        r53.change("Z1", shift_batch((BLUE, GREEN), (90, 10)), current=[BLUE, GREEN])
    assert not err.value.temporary and r53.requests == 1


def test_an_invalid_batch_is_never_sent() -> None:
    """A batch breaking a rule raises InvalidBatch before any request (the stub has no answer queued)."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    with stub, pytest.raises(InvalidBatch):
        r53.change("Z1", batch(("CREATE", GREEN)), current=[SIMPLE])
    assert r53.requests == 0


def test_list_records_pages_and_stops_at_the_next_name() -> None:
    """Records at one name are read across pages, and listing stops at the first other name."""
    clock = FakeClock()
    r53, stub = stubbed(clock)
    stub.add_response("list_resource_record_sets", {
        "ResourceRecordSets": [BLUE.to_aws()], "IsTruncated": True, "MaxItems": "300",
        "NextRecordName": NAME, "NextRecordType": "CNAME", "NextRecordIdentifier": "green"},
        {"HostedZoneId": "Z1", "StartRecordName": NAME, "MaxItems": "300"})
    stub.add_response("list_resource_record_sets", {
        "ResourceRecordSets": [GREEN.to_aws(), {**SIMPLE.to_aws(), "Name": "zzz.example.com."}],
        "IsTruncated": False, "MaxItems": "300"},
        {"HostedZoneId": "Z1", "StartRecordName": NAME, "StartRecordType": "CNAME",
         "StartRecordIdentifier": "green", "MaxItems": "300"})
    with stub:
        assert r53.list_records("Z1", "App.Example.com") == [BLUE, GREEN]
    stub.assert_no_pending_responses()


def test_missing_credentials_are_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No AWS credentials anywhere: BadInput (exit 2), raised before any request leaves."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ROUTE_53", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(BadInput, match="no usable AWS credentials"):
        Route53Client(max_attempts=1).find_zone("example.com")


def test_route53_limiter_is_a_token_bucket_burst_10_then_10_per_second() -> None:
    """Shaped like Route53's own throttling (token buckets since 2026-07-30), smaller: 60 back-to-back
    requests go 10 at once, then one per 0.1 s; in any w seconds never more than 10 + 10 w."""
    clock = FakeClock(start=0.0)
    r53 = Route53Client(client=object(), clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(60):
        r53.limiter.acquire()
        stamps.append(clock())
    assert stamps[9] == 0.0 and stamps[-1] == pytest.approx(5.0)
    assert burst_of(stamps, 10) <= 10 + 1e-6


def test_health_check_spec_refuses_what_aws_refuses() -> None:
    """RequestInterval 10/30, FailureThreshold 1-10, a path starting with /, one endpoint."""
    for bad in ({"interval": 15}, {"threshold": 20}, {"path": "health"}, {"fqdn": None}, {"ip": "10.0.0.1"}):
        with pytest.raises(BadInput):
            HealthCheckSpec(**{"fqdn": "a.lb", **bad})  # type: ignore[arg-type]
    spec = HealthCheckSpec(fqdn="a.lb", port=8080, path="/healthz", interval=10)
    assert spec.matches({**spec.to_aws(), "Inverted": False, "MeasureLatency": False})
    assert not spec.matches({**spec.to_aws(), "Port": 80})


# ---- FakeRoute53: AWS's rules, independent of meshops's validator --------------------------------------


def raw_fake(clock: FakeClock | None = None, propagation: float = 0.0) -> tuple[FakeRoute53, str]:
    fake = FakeRoute53(clock=clock or FakeClock(), propagation=propagation, validate_client_side=False)
    zone = fake.add_zone("example.com")
    return fake, zone


def test_fake_batches_are_atomic() -> None:
    """A batch whose second change fails leaves the first unapplied (moto would keep it)."""
    fake, zone = raw_fake()
    fake.put(zone, BLUE)
    with pytest.raises(FakeAwsError, match="InvalidChangeBatch"):
        fake.change(zone, batch(("UPSERT", BLUE.with_weight(50)), ("DELETE", GREEN)), current=[])
    assert fake.records(zone) == [BLUE]


@pytest.mark.parametrize(("changes", "match"), [
    ((("UPSERT", BLUE.with_weight(300)),), "Invalid weight"),
    ((("CREATE", GREEN),), "non-weighted set exists"),
    ((("DELETE", RecordSet(name=NAME, type="CNAME", ttl=300, values=("blue.lb",))),), "not found or the values"),
    ((("CREATE", SIMPLE),), "already exists"),
    ((("CREATE", RecordSet(name=NAME, type="A", ttl=60, values=("10.0.0.1",))),), "conflicts with other records"),
    ((("UPSERT", RecordSet(name=NAME, type="CNAME", ttl=60, values=("x",), set_identifier="x", weight=1,
                           health_check_id="hc-missing")),), "does not exist"),
])
def test_fake_refuses_what_route53_refuses(changes: tuple[tuple[str, RecordSet], ...], match: str) -> None:
    """Weight > 255, simple beside weighted, inexact DELETE, duplicate CREATE, CNAME conflicts, unknown checks."""
    fake, zone = raw_fake()
    fake.put(zone, SIMPLE)
    with pytest.raises(FakeAwsError, match=match):
        fake.change(zone, batch(*changes), current=[])
    assert fake.records(zone) == [SIMPLE]


def test_fake_changes_go_pending_then_insync_on_the_injected_clock() -> None:
    """A change is PENDING for the propagation time, then INSYNC; every change has its own id."""
    clock = FakeClock()
    fake, zone = raw_fake(clock, propagation=30.0)
    fake.put(zone, SIMPLE)
    first = fake.change(zone, batch(("DELETE", SIMPLE), ("CREATE", BLUE), ("CREATE", GREEN)), current=[])
    second = fake.change(zone, shift_batch((BLUE, GREEN), (90, 10)), current=[])
    assert first.status == "PENDING" and first.id != second.id
    clock.sleep(29.9)
    assert fake.get_change(first.id).status == "PENDING"
    clock.sleep(0.1)
    assert fake.get_change(first.id).status == "INSYNC"


def test_fake_health_checks_in_use_cannot_be_deleted() -> None:
    """Deleting a health check a record still uses fails (moto lets it go)."""
    fake, zone = raw_fake()
    hc = fake.create_health_check("ref", HealthCheckSpec(fqdn="blue.lb"), tags={"meshops-run": "r"})
    assert fake.create_health_check("ref", HealthCheckSpec(fqdn="blue.lb"), tags={}).id == hc.id  # idempotent
    fake.put(zone, RecordSet(**{**BLUE.__dict__, "health_check_id": hc.id}))
    with pytest.raises(FakeAwsError, match="HealthCheckInUse"):
        fake.delete_health_check(hc.id)
    assert fake.health_check_tags([hc.id]) == {hc.id: {"meshops-run": "r"}}


def test_fake_injected_throttling_fails_the_next_calls() -> None:
    """fail_next makes the next calls of one operation fail with the given code, then it recovers."""
    fake, zone = raw_fake()
    fake.fail_next("list_resource_record_sets", "Throttling", times=2)
    for _ in range(2):
        with pytest.raises(FakeAwsError, match="Throttling") as err:
            fake.list_records(zone, NAME)
        assert err.value.temporary
    assert fake.list_records(zone, NAME) == []
