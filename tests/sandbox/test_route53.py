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
