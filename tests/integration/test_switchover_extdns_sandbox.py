"""`--dns-owner external-dns` against the sandbox's external-dns-like reconciler (not a fake): meshops
moves the weights only through the gateway Services' annotations; the reconciler owns the records
(TXT ownership per cluster) and writes them to moto's Route53. Read back with boto3."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.integration.test_switchover_traffic import meshops, read_env

NAME = "app.example.com."
PREFIX = "external-dns.alpha.kubernetes.io/"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("extdns")
    up = meshops(dict(os.environ), "sandbox", "up", "--dir", str(directory), "--scenario", "blue-green",
                 "--options-json", json.dumps({"external_dns": {"interval": 0.3}}))
    assert up.returncode == 0, up.stderr
    env = read_env(directory / "env")
    env.update(MESHOPS_STATE_DIR=str(directory / "state"), MESHOPS_LOG_FORMAT="json")
    try:
        yield {"dir": directory, "env": env}
    finally:
        meshops(dict(os.environ), "sandbox", "down", "--dir", str(directory))


def _records(env: dict[str, str]) -> dict[tuple[str, str, str | None], Any]:
    r53 = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL_ROUTE_53"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    data = r53.list_resource_record_sets(HostedZoneId=env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"])["ResourceRecordSets"]
    return {(r["Name"], r["Type"], r.get("SetIdentifier")): r for r in data
            if r["Name"] in (NAME, "cname-" + NAME, "_meshops-lock." + NAME)}


def test_external_dns_mode_moves_the_weights_through_the_annotations(sandbox: dict[str, Any]) -> None:
    env = sandbox["env"]
    before = _records(env)
    owner = before[("cname-" + NAME, "TXT", None)]["ResourceRecords"][0]["Value"]
    assert "external-dns/owner=blue," in owner and before[(NAME, "CNAME", None)]["TTL"] == 60
    # TTL 1 through external-dns's own annotation, as an operator would set it before a switchover.
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=env["KUBECONFIG"], context="blue"))
    api.patch_namespaced_service("istio-ingressgateway", "istio-system", {"metadata": {"annotations": {PREFIX + "ttl": "1"}}})
    run = meshops(env, "switchover", "--dns-owner", "external-dns", "--from", "blue", "--to", "green",
                  "--zone", "example.com", "--record", "app.example.com", "--steps", "50,100", "--bake", "1s",
                  "--propagation-allowance", "0s", "--probe-interval", "0.3s",
                  "--probe", "http://app.example.com/productpage")
    assert run.returncode == 0, run.stderr[-3000:]
    after = _records(env)
    weights = {k[2]: r.get("Weight") for k, r in after.items() if k[1] == "CNAME"}
    assert weights == {"blue": 0, "green": 100}
    owners = {k[2]: r["ResourceRecords"][0]["Value"] for k, r in after.items() if k[1] == "TXT" and k[0] != "_meshops-lock." + NAME}
    assert "external-dns/owner=blue," in owners["blue"] and "external-dns/owner=green," in owners["green"]
    assert ("_meshops-lock." + NAME, "TXT", None) not in after
    # The reconciler, not meshops, wrote the records: meshops's change batches touched only its lock.
    annotations = api.read_namespaced_service("istio-ingressgateway", "istio-system").metadata.annotations
    assert annotations[PREFIX + "set-identifier"] == "blue" and annotations[PREFIX + "aws-weight"] == "0"
