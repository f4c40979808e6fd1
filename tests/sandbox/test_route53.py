"""The sandbox's Route53 endpoint, read back through boto3 with only the exported environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshops.sandbox.route53 import Route53Sandbox


@pytest.fixture(scope="module")
def r53():
    sandbox = Route53Sandbox()
    sandbox.start()
    sandbox.seed("blue-ingress.elb.sandbox.local")
    yield sandbox
    sandbox.stop()


def test_boto3_reads_zone_with_exported_env_only(r53):
    # A fresh process that knows nothing but the environment DIR/env would export.
    code = (
        "import boto3, json\n"
        "c = boto3.client('route53')\n"
        "zones = c.list_hosted_zones()['HostedZones']\n"
        "zid = [z['Id'] for z in zones if z['Name'] == 'example.com.'][0]\n"
        "rrs = c.list_resource_record_sets(HostedZoneId=zid)['ResourceRecordSets']\n"
        "print(json.dumps([r for r in rrs if r['Type'] == 'CNAME']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(r53.env())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    (record,) = json.loads(out.stdout)
    assert record["Name"] == "app.example.com."
    assert record["TTL"] == 60
    assert record["ResourceRecords"] == [{"Value": "blue-ingress.elb.sandbox.local"}]
    assert "Weight" not in record  # a simple record to start with


def test_seed_is_idempotent_and_repoints(r53):
    r53.seed("green-ingress.elb.sandbox.local")
    c = r53.client()
    zones = [z for z in c.list_hosted_zones()["HostedZones"] if z["Name"] == "example.com."]
    assert len(zones) == 1
    rrs = c.list_resource_record_sets(HostedZoneId=r53.zone_id)["ResourceRecordSets"]
    cnames = [r for r in rrs if r["Type"] == "CNAME"]
    assert [r["ResourceRecords"][0]["Value"] for r in cnames] == ["green-ingress.elb.sandbox.local"]
    r53.seed("blue-ingress.elb.sandbox.local")


def test_env_names_endpoint_and_dummy_credentials(r53):
    env = r53.env()
    assert env["AWS_ENDPOINT_URL_ROUTE_53"].startswith("http://127.0.0.1:")
    assert env["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL_ROUTE_53"]
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"] and env["AWS_DEFAULT_REGION"]



def test_a_batch_is_never_listed_half_applied(r53, monkeypatch):
    """Route53 applies a batch whole, for readers too: a list during a conversion sees the simple
    record or the weighted pair, never neither nor half. moto alone lists mid-batch (the negative
    control: without the sandbox's read lock the reader below sees the zone with the simple record
    deleted and no weighted one yet); the chaos suite's DNS observer relies on AWS's picture."""
    import threading

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.route53.models import FakeZone, route53_backends

    backend = route53_backends[DEFAULT_ACCOUNT_ID]["global"]
    name = "atomic.example.com."
    simple = {"Name": name, "Type": "CNAME", "TTL": 60, "ResourceRecords": [{"Value": "blue.lb"}]}
    blue = {**simple, "SetIdentifier": "blue", "Weight": 100}
    green = {**simple, "SetIdentifier": "green", "Weight": 0, "ResourceRecords": [{"Value": "green.lb"}]}
    backend.change_resource_record_sets(r53.zone_id, [{"Action": "UPSERT", "ResourceRecordSet": simple}])
    seen: list[tuple[str, ...]] = []

    def look() -> None:
        records = backend.list_resource_record_sets(r53.zone_id, "CNAME", name, 100)[0]
        seen.append(tuple(sorted(r.set_identifier or "simple" for r in records if r.name == name)))

    # Mid-batch (the simple record deleted, the weighted pair not yet written), a reader lists.
    upsert = FakeZone.upsert_rrset
    readers: list[threading.Thread] = []

    def paused_upsert(self, record_set):
        if not readers and record_set.get("SetIdentifier") == "blue":
            readers.append(threading.Thread(target=look))
            readers[0].start()
            readers[0].join(timeout=0.5)  # with the lock the reader waits for the batch: give up
        return upsert(self, record_set)

    monkeypatch.setattr(FakeZone, "upsert_rrset", paused_upsert)
    backend.change_resource_record_sets(r53.zone_id, [
        {"Action": "DELETE", "ResourceRecordSet": simple}, {"Action": "CREATE", "ResourceRecordSet": blue},
        {"Action": "CREATE", "ResourceRecordSet": green}])
    readers[0].join(timeout=5)
    assert seen == [("blue", "green")]


def test_a_health_check_created_again_with_its_caller_reference_is_the_same_check(r53):
    """CreateHealthCheck sent again with the same CallerReference and settings (a retry after a lost
    answer) returns the existing check, as AWS does; other settings, or the reference of a deleted
    check, are HealthCheckAlreadyExists. moto alone made a second check (the negative control)."""
    from botocore.exceptions import ClientError

    c = r53.client()
    config = {"Type": "HTTP", "FullyQualifiedDomainName": "blue.lb", "Port": 15021, "ResourcePath": "/healthz/ready",
              "RequestInterval": 30, "FailureThreshold": 3}
    first = c.create_health_check(CallerReference="sandbox-test-ref", HealthCheckConfig=config)["HealthCheck"]
    again = c.create_health_check(CallerReference="sandbox-test-ref", HealthCheckConfig=config)["HealthCheck"]
    assert again["Id"] == first["Id"]
    assert [h["Id"] for h in c.list_health_checks()["HealthChecks"]
            if h["CallerReference"] == "sandbox-test-ref"] == [first["Id"]]
    with pytest.raises(ClientError) as other:
        c.create_health_check(CallerReference="sandbox-test-ref", HealthCheckConfig={**config, "Port": 80})
    assert other.value.response["Error"]["Code"] == "HealthCheckAlreadyExists"
    c.delete_health_check(HealthCheckId=first["Id"])
    with pytest.raises(ClientError) as gone:
        c.create_health_check(CallerReference="sandbox-test-ref", HealthCheckConfig=config)
    assert gone.value.response["Error"]["Code"] == "HealthCheckAlreadyExists"


def test_the_strict_batches_are_installed_once_however_many_sandboxes_start() -> None:
    """A flag that was set in the wrong scope let every sandbox in a process wrap moto again; the
    second read lock then waited on the first forever (the sandbox tests hung after the ingress ones)."""
    from moto.route53.models import Route53Backend

    from meshops.sandbox.route53 import install_strict_batches

    for _ in range(3):
        install_strict_batches()
    for name in ("list_resource_record_sets", "change_resource_record_sets"):
        wrapper = getattr(Route53Backend, name)
        assert hasattr(wrapper, "__wrapped__") and not hasattr(wrapper.__wrapped__, "__wrapped__"), name
