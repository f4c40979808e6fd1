"""Switchovers on the blue-green sandbox under live synthetic traffic, with no flags beyond the README's.

The sandbox answers the record by Route53's rules (weights, health checks evaluated against each
ingress) and a fixed-rate load generator counts requests per cluster; meshops reaches the ingress
load balancers (moto ELB: a Classic LB for blue, an NLB for green) through MESHOPS_CONNECT_TO from
DIR/env only. Everything is read back with boto3, not through meshops. The sandbox's external-dns-like
reconciler owns web.example.com, for --dns-owner external-dns.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from meshops.sandbox.traffic_cli import generator_for
from tests.support.switchover import ROOT, Route53Proxy

RATE = 120.0
NAME = "app.example.com."
CLASSIC_US_EAST_1, NLB_US_EAST_1 = "Z35SXDOTRQ7X7K", "Z26RNL4JYFTOTI"  # istio-reality.md §8


def read_env(path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for line in path.read_text().splitlines():
        m = re.fullmatch(r'export (\w+)="(.*)"', line.strip())
        if m:
            env[m.group(1)] = re.sub(r"\$(\w+)", lambda v: env.get(v.group(1), ""),
                                     re.sub(r"\\(.)", r"\1", m.group(2)))
    return env


def meshops(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshops", *args], env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def aws(env: dict[str, str], service: str) -> Any:
    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",  # type: ignore[call-overload]
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("traffic")
    # external-dns owns web.example.com (see the last test); meshops owns app.example.com.
    up = meshops(dict(os.environ), "sandbox", "up", "--dir", str(directory), "--scenario", "blue-green",
                 "--istio", "1.24.1", "--options-json",
                 json.dumps({"external_dns": {"interval": 0.3, "record": "web.example.com"}}))
    assert up.returncode == 0, up.stderr
    env = read_env(directory / "env")
    env.update(MESHOPS_STATE_DIR=str(directory / "state"), MESHOPS_LOG_FORMAT="json")
    try:
        yield {"dir": directory, "env": env}
    finally:
        meshops(dict(os.environ), "sandbox", "down", "--dir", str(directory))


@pytest.fixture
def world(sandbox: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The app record back on blue as a simple CNAME with TTL 1 s, no faults, no health checks."""
    env = sandbox["env"]
    r53 = aws(env, "route53")
    zone = env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
    original = {"Name": NAME, "Type": "CNAME", "TTL": 1,
                "ResourceRecords": [{"Value": env["MESHOPS_SANDBOX_INGRESS_HOST_BLUE"]}]}
    current = [r for r in r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"] if r["Name"] == NAME]
    changes = [{"Action": "DELETE", "ResourceRecordSet": r} for r in current]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={
        "Changes": [*changes, {"Action": "CREATE", "ResourceRecordSet": original}]})
    for r in r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]:
        if r["Name"].startswith("_meshops-lock."):  # left by a failed test's killed run
            r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={
                "Changes": [{"Action": "DELETE", "ResourceRecordSet": r}]})
    for check in r53.list_health_checks()["HealthChecks"]:  # left by an earlier test's finished switchover
        r53.delete_health_check(HealthCheckId=check["Id"])
    meshops(env, "sandbox", "fault", "--dir", str(sandbox["dir"]), "--clear")
    yield {**sandbox, "r53": r53, "zone": zone, "original": original}


def records(w: dict[str, Any], name: str = NAME) -> list[dict[str, Any]]:
    return [r for r in w["r53"].list_resource_record_sets(HostedZoneId=w["zone"])["ResourceRecordSets"]
            if r["Name"] == name]


def readme_switchover(env: dict[str, str], *extra: str) -> list[str]:
    """The README's command line, with short holds (the record's TTL is 1 s here)."""
    return ["switchover", "--from", "blue", "--to", "green", "--zone", "example.com", "--record", "app.example.com",
            "--propagation-allowance", "0s", "--probe", "http://app.example.com/productpage", *extra]


def shares(gen: Any, bakes: list[dict[str, Any]], ttl: float) -> list[tuple[int, float, int]]:
    """(percent of the bake, green's share of requests once the TTL passed, requests counted) per bake."""
    out = []
    for bake in bakes:
        since, until = math.ceil(bake["started"] + ttl), math.floor(bake["ended"])
        totals = gen.counts.total(since=since, until=until)
        n = sum(v[0] + v[1] for v in totals.values())
        out.append((bake["percent"], 100.0 * sum(totals.get("green", [0, 0])) / max(1, n), n))
    return out


def test_healthy_switchover_under_traffic_follows_each_weight_and_fails_nothing(world: dict[str, Any]) -> None:
    """README flags only; 120 req/s: 0 failed, green's share within 5 points of each step once the TTL passed;
    a second switchover of the same record meanwhile exits 4 naming the first and changes nothing."""
    env = world["env"]
    gen = generator_for(world["dir"], rate=RATE, duration=120, path="/productpage", clients=200,
                        check_interval=1.0, seed=14).start()
    first: subprocess.Popen[str] | None = None
    try:
        first = subprocess.Popen([sys.executable, "-m", "meshops", *readme_switchover(
            env, "--steps", "10,25,50,100", "--bake", "8s", "--probe-interval", "0.5s")],
            env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        lock = "_meshops-lock." + NAME
        deadline = time.monotonic() + 60
        while not records(world, lock) and time.monotonic() < deadline:
            time.sleep(0.2)
        holder = records(world, lock)[0]["ResourceRecords"][0]["Value"]
        run_id = re.search(r"run=(\S+)", holder).group(1)  # type: ignore[union-attr]
        # Both clusters' Leases are held too: no upgrade of the source can start meanwhile.
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        for context in ("blue", "green"):
            leases = k8s.CoordinationV1Api(k8s_config.new_client_from_config(config_file=env["KUBECONFIG"],
                                                                            context=context))
            lease = leases.read_namespaced_lease("meshops-run-lock", "meshops-system")
            assert lease.spec.holder_identity.startswith(run_id + "@"), (context, lease.spec.holder_identity)
        proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"])
        second = meshops({**env, "AWS_ENDPOINT_URL_ROUTE_53": proxy.url},
                         *readme_switchover(env, "--steps", "100", "--bake", "1s"))
        proxy.close()
        assert second.returncode == 4, second.stderr[-2000:]
        assert run_id in second.stderr and "_meshops-lock.app.example.com" in second.stderr
        assert proxy.batches() == [] and proxy.created_health_checks() == []  # the second run changed nothing
        out, err = first.communicate(timeout=150)
        assert first.returncode == 0, err[-3000:]
    finally:
        gen.stop()
        if first is not None and first.poll() is None:
            first.kill()
    assert out.strip().splitlines()[-1] == run_id
    report = json.loads(meshops(env, "report", run_id, "-o", "json").stdout)
    bakes = [{**b, "percent": int(p["weights"]["green"])} for b in report["traffic"]["bakes"]
             for p in report["traffic"]["points"] if p["step"] == b["step"]]
    measured = shares(gen, bakes, ttl=1.0)
    print("green share per step (percent, measured, requests):", measured)
    totals = gen.counts.total()
    print("requests per cluster (ok, failed):", totals)
    assert sum(v[1] for v in totals.values()) == 0 and gen.unresolved == 0
    assert [p for p, _, _ in measured] == [10, 25, 50, 100]
    for percent, share, n in measured:
        assert n >= 500 and abs(share - percent) <= 5, (percent, share, n)
    assert not records(world, lock)  # released at the end
    # `meshops report --traffic` shows the requests each cluster served beside each set of weights.
    counted = world["dir"] / "traffic.jsonl"
    gen.write(counted)
    shown = json.loads(meshops(env, "report", run_id, "--traffic", str(counted), "-o", "json").stdout)
    segments = {s["step"]: s for s in shown["traffic"]["request_segments"]}
    assert list(segments) == ["before", "shift[0]", "shift[1]", "shift[2]", "shift[3]"]
    assert segments["shift[3]"]["weights"] == {"blue": 0, "green": 100}
    assert segments["shift[1]"]["requests"]["green"]["ok"] > 0
    assert segments["shift[0]"]["requests"]["blue"]["ok"] > segments["shift[0]"]["requests"]["green"]["ok"] > 0
    # "before" runs from the conversion to the first shift: on the sandbox often under a second, and
    # the generator counts per whole second (a sample at second s is in the segment holding s).
    before = segments["before"]
    if math.floor(before["until"]) - math.ceil(before["from"]) >= 1:
        assert before["requests"]["blue"]["ok"] > 0
    page = meshops(env, "report", run_id, "--traffic", str(counted), "-o", "md").stdout
    assert "requests served meanwhile" in page and "green" in page
    weights = {r["SetIdentifier"]: r["Weight"] for r in records(world)}
    assert weights == {"blue": 0, "green": 100}


def test_ingress_503_on_green_at_25_percent_rolls_back_within_a_probe_interval(world: dict[str, Any]) -> None:
    """ingress-503 injected on green as its 25 % batch goes out: the rollback batch follows within one probe
    interval + 1 s; failed requests stay under (interval + TTL) x rate x 0.25; DNS, checks and lock are gone."""
    env, interval, ttl = world["env"], 1.0, 1.0
    fault_at: list[float] = []

    def break_green(batch: dict[str, Any]) -> None:
        if any(c["ResourceRecordSet"].get("SetIdentifier") == "green" and c["ResourceRecordSet"].get("Weight") == 25
               for c in batch["Changes"]):
            assert meshops(env, "sandbox", "fault", "--dir", str(world["dir"]), "--cluster", "green",
                           "ingress-503").returncode == 0
            fault_at.append(time.monotonic())

    proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"], on_change=break_green)
    gen = generator_for(world["dir"], rate=100.0, duration=120, path="/productpage", clients=200,
                        check_interval=1.0, seed=15).start()
    try:
        run = meshops({**env, "AWS_ENDPOINT_URL_ROUTE_53": proxy.url},
                      *readme_switchover(env, "--steps", "10,25,50,100", "--bake", "3s", "--probe-interval", "1s"))
        time.sleep(ttl + 1)  # the cached answers run out
    finally:
        gen.stop()
        proxy.close()
    assert run.returncode == 1, run.stderr[-3000:]
    rollback = [e.at for e in proxy.exchanges if e.method == "POST" and e.path.endswith("/rrset/")
                and b"<Weight>0</Weight>" in e.body and b"green" in e.body and e.at > fault_at[0]]
    assert rollback, "no rollback batch"
    took = rollback[0] - fault_at[0]
    failed = sum(v[1] for v in gen.counts.total().values())
    bound = (interval + ttl) * 100.0 * 0.25
    print(f"rollback batch {took:.2f}s after the fault; failed requests {failed} (bound (interval + TTL) x rate x "
          f"0.25 = {bound:g}); per cluster {gen.counts.total()}")
    assert took <= interval + 1.0
    assert failed <= bound
    assert records(world) == [world["original"]]  # the simple record again
    assert not records(world, "_meshops-lock." + NAME)
    assert world["r53"].list_health_checks()["HealthChecks"] == []


def test_alias_between_classic_and_nlb_carries_each_ones_zone_id(world: dict[str, Any]) -> None:
    """An alias on blue's Classic LB moved to green's NLB: green's record carries the NLB zone ID (not the source
    record's), both health checks are HTTP :15021/healthz/ready on each LB's own name."""
    env = world["env"]
    hosts = {c: env[f"MESHOPS_SANDBOX_INGRESS_HOST_{c.upper()}"] for c in ("blue", "green")}
    elb, elbv2 = aws(env, "elb"), aws(env, "elbv2")
    assert {d["DNSName"]: d["CanonicalHostedZoneNameID"] for d in elb.describe_load_balancers()
            ["LoadBalancerDescriptions"]} == {hosts["blue"]: CLASSIC_US_EAST_1}
    assert {d["DNSName"]: (d["Type"], d["CanonicalHostedZoneId"]) for d in elbv2.describe_load_balancers()
            ["LoadBalancers"]} == {hosts["green"]: ("network", NLB_US_EAST_1)}
    name = "shop.example.com."
    world["r53"].change_resource_record_sets(HostedZoneId=world["zone"], ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "AliasTarget": {
            "HostedZoneId": CLASSIC_US_EAST_1, "DNSName": hosts["blue"], "EvaluateTargetHealth": True}}}]})
    # An alias's TTL is ELB's 60 s, so the hold is a minute: the records are read back as soon as the
    # shift is made, then the run is stopped (SIGTERM: a safe point) and rolled back.
    run = subprocess.Popen([sys.executable, "-m", "meshops", "switchover", "--from", "blue", "--to", "green",
                            "--zone", "example.com", "--record", "shop.example.com", "--steps", "100", "--bake", "0s",
                            "--probe-interval", "0.5s", "--probe", "http://app.example.com/productpage"],
                           env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and {r.get("SetIdentifier"): r.get("Weight") for r in records(world, name)} \
            != {"blue": 0, "green": 100}:
        assert run.poll() is None, run.communicate()[1][-3000:]
        time.sleep(0.2)
    got = {r["SetIdentifier"]: (r["AliasTarget"]["HostedZoneId"], r["AliasTarget"]["DNSName"].rstrip("."), r["Weight"])
           for r in records(world, name)}
    run.terminate()
    _, err = run.communicate(timeout=60)
    assert got == {"blue": (CLASSIC_US_EAST_1, hosts["blue"], 0), "green": (NLB_US_EAST_1, hosts["green"], 100)}
    checks = {r["SetIdentifier"]: r["HealthCheckId"] for r in records(world, name)}
    configs = {sid: world["r53"].get_health_check(HealthCheckId=hc)["HealthCheck"]["HealthCheckConfig"]
               for sid, hc in checks.items()}
    assert {sid: (c["Type"], c["FullyQualifiedDomainName"], c["Port"], c["ResourcePath"]) for sid, c in configs.items()} \
        == {c: ("HTTP", hosts[c], 15021, "/healthz/ready") for c in ("blue", "green")}
    run_id = re.search(r"run (\S+) started", err).group(1)  # type: ignore[union-attr]
    back = meshops(env, "--context", "green", "rollback", run_id)
    assert back.returncode == 0, back.stderr[-2000:]
    assert [r["AliasTarget"]["HostedZoneId"] for r in records(world, name)] == [CLASSIC_US_EAST_1]
    assert not records(world, "_meshops-lock." + name)


def test_the_sandbox_route53_refuses_what_aws_refuses(world: dict[str, Any]) -> None:
    """Negative control for moto's laxness: a CREATE of an existing record and an inexact DELETE fail, a failed
    batch changes nothing, and deleting one weighted record leaves another name's record of that SetIdentifier."""
    from botocore.exceptions import ClientError

    r53, zone, original = world["r53"], world["zone"], world["original"]
    other = {**original, "ResourceRecords": [{"Value": "elsewhere.example.net"}]}
    for changes in ([{"Action": "CREATE", "ResourceRecordSet": other}],
                    [{"Action": "DELETE", "ResourceRecordSet": {**original, "TTL": 300}}],
                    [{"Action": "UPSERT", "ResourceRecordSet": {**original, "Name": "x.example.com."}},
                     {"Action": "CREATE", "ResourceRecordSet": original}]):
        with pytest.raises(ClientError, match=r"InvalidChangeBatch|InvalidInput"):
            r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    assert records(world) == [original] and records(world, "x.example.com.") == []  # all or nothing
    weighted = [{"Name": n, "Type": "CNAME", "TTL": 1, "SetIdentifier": "blue", "Weight": 1,
                 "ResourceRecords": [{"Value": "b.example.net"}]} for n in ("w1.example.com.", "w2.example.com.")]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": r} for r in weighted]})
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": weighted[0]}]})
    assert records(world, "w1.example.com.") == [] and records(world, "w2.example.com.") == [weighted[1]]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": weighted[1]}]})


def test_external_dns_mode_moves_the_weights_through_the_annotations(sandbox: dict[str, Any]) -> None:
    """--dns-owner external-dns against the sandbox's reconciler (not a fake): meshops changes only the gateway
    Services' annotations; the reconciler owns the records (TXT per cluster) and writes them to Route53."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    env, web, prefix = sandbox["env"], "web.example.com.", "external-dns.alpha.kubernetes.io/"
    r53 = aws(env, "route53")
    zone = env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]

    def sets() -> dict[tuple[str, str, str | None], Any]:
        data = r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        return {(r["Name"], r["Type"], r.get("SetIdentifier")): r for r in data
                if r["Name"] in (web, "cname-" + web, "_meshops-lock." + web)}

    before = sets()
    assert "external-dns/owner=blue," in before[("cname-" + web, "TXT", None)]["ResourceRecords"][0]["Value"]
    assert before[(web, "CNAME", None)]["ResourceRecords"][0]["Value"] == env["MESHOPS_SANDBOX_INGRESS_HOST_BLUE"]
    # TTL 1 through external-dns's own annotation, as an operator would lower it before a switchover.
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=env["KUBECONFIG"], context="blue"))
    api.patch_namespaced_service("istio-ingressgateway", "istio-system", {"metadata": {"annotations": {prefix + "ttl": "1"}}})
    deadline = time.monotonic() + 30
    while sets()[(web, "CNAME", None)]["TTL"] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"])
    try:
        run = meshops({**env, "AWS_ENDPOINT_URL_ROUTE_53": proxy.url}, "switchover", "--dns-owner", "external-dns",
                      "--from", "blue", "--to", "green", "--zone", "example.com", "--record", "web.example.com",
                      "--steps", "50,100", "--bake", "1s", "--propagation-allowance", "0s", "--probe-interval", "0.3s",
                      "--probe", "http://app.example.com/productpage")
    finally:
        proxy.close()
    assert run.returncode == 0, run.stderr[-3000:]
    after = sets()
    assert {k[2]: r.get("Weight") for k, r in after.items() if k[1] == "CNAME"} == {"blue": 0, "green": 100}
    owners = {k[2]: r["ResourceRecords"][0]["Value"] for k, r in after.items() if k[0] == "cname-" + web}
    assert "external-dns/owner=blue," in owners["blue"] and "external-dns/owner=green," in owners["green"]
    assert ("_meshops-lock." + web, "TXT", None) not in after
    # meshops's own change batches touched only its lock record: the reconciler wrote the records.
    assert {c["ResourceRecordSet"]["Name"] for b in proxy.batches() for c in b["Changes"]} == {"_meshops-lock." + web}
    annotations = api.read_namespaced_service("istio-ingressgateway", "istio-system").metadata.annotations
    assert annotations[prefix + "set-identifier"] == "blue" and annotations[prefix + "aws-weight"] == "0"
