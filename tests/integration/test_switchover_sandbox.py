"""`meshops switchover` as a user runs it, against the sandbox's blue-green scenario: two simulated
clusters over HTTP, real ingress endpoints, the sandbox's moto Route53 (behind a recording proxy)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from meshops.domain.weights import RecordSet
from tests.support.switchover import ROOT, Route53Proxy, check_batches

MESHOPS = [sys.executable, "-m", "meshops"]
NAME = "app.example.com."


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r'export (\w+)="(.*)"$', line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("sandbox")
    up = subprocess.run([*MESHOPS, "sandbox", "up", "--dir", str(d), "--scenario", "blue-green"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        pytest.fail(f"sandbox up failed: {up.stderr[-2000:]}")
    env = _env_file(d / "env")
    # The sandbox's kubeconfig token is the word "sandbox"; meshops scrubs tokens from journals, which
    # would blank the word out of every ingress hostname. The API does not authenticate: use a random one.
    kubeconfig = d / "kubeconfig-test"
    kubeconfig.write_text((d / "kubeconfig").read_text().replace("token: sandbox", f"token: {secrets.token_hex(16)}"))
    yield {"dir": d, "env": env, "kubeconfig": str(kubeconfig)}
    subprocess.run([*MESHOPS, "sandbox", "down", "--dir", str(d)], cwd=ROOT, capture_output=True, timeout=60)


@pytest.fixture
def world(sandbox: dict[str, Any], tmp_path: Path) -> Any:
    """The record back on blue as a simple CNAME with TTL 1 s, no faults, and a proxy in front of moto."""
    env = sandbox["env"]
    client = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL_ROUTE_53"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    zone = env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
    original = RecordSet(name=NAME, type="CNAME", ttl=1, values=(env["MESHOPS_SANDBOX_INGRESS_HOST_BLUE"],))
    current = [r for r in client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"] if r["Name"] == NAME]
    changes = [{"Action": "DELETE", "ResourceRecordSet": r} for r in current if "SetIdentifier" in r]
    changes.append({"Action": "UPSERT", "ResourceRecordSet": original.to_aws()})
    client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    subprocess.run([*MESHOPS, "sandbox", "fault", "--dir", str(sandbox["dir"]), "--clear"], cwd=ROOT,
                   capture_output=True, timeout=30, check=True)
    proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"])
    run_env = {**os.environ, **env, "KUBECONFIG": sandbox["kubeconfig"], "AWS_ENDPOINT_URL_ROUTE_53": proxy.url, "MESHOPS_STATE_DIR": str(tmp_path / "state"),
               "AWS_EC2_METADATA_DISABLED": "true", "MESHOPS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    yield {**sandbox, "client": client, "zone": zone, "original": original, "proxy": proxy, "env": run_env}
    proxy.close()


def records(world: dict[str, Any]) -> list[RecordSet]:
    data = world["client"].list_resource_record_sets(HostedZoneId=world["zone"])["ResourceRecordSets"]
    return [RecordSet.from_aws(r) for r in data if r["Name"] == NAME]


def weights(world: dict[str, Any]) -> dict[str, int | None]:
    return {str(r.set_identifier): r.weight for r in records(world)}


def switchover_args(world: dict[str, Any], *extra: str) -> list[str]:
    env = world["env"]
    return [*MESHOPS, "switchover", "--from", "blue", "--to", "green", "--zone", "example.com",
            "--record", "app.example.com", "--probe", "http://app.example.com/productpage",
            "--connect-to", f"{env['MESHOPS_SANDBOX_INGRESS_HOST_BLUE']}:80:{env['MESHOPS_SANDBOX_INGRESS_BLUE'][7:]}",
            "--connect-to", f"{env['MESHOPS_SANDBOX_INGRESS_HOST_GREEN']}:80:{env['MESHOPS_SANDBOX_INGRESS_GREEN'][7:]}",
            "--bake", "1s", "--propagation-allowance", "0s", "--probe-interval", "0.25s", *extra]


def meshops(world: dict[str, Any], args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=world["env"], capture_output=True, text=True, timeout=timeout)


def shift_weights(proxy: Route53Proxy) -> list[dict[str, int]]:
    return [{c["ResourceRecordSet"]["SetIdentifier"]: c["ResourceRecordSet"]["Weight"] for c in b["Changes"]}
            for b in proxy.batches()
            if all(c["Action"] == "UPSERT" and "Weight" in c["ResourceRecordSet"] for c in b["Changes"])]


def test_full_switchover_then_rollback_on_the_sandbox(world: dict[str, Any]) -> None:
    """blue -> green 0 -> 100 with real probes (exit 0), then `meshops rollback RUN_ID` puts the record back."""
    done = meshops(world, switchover_args(world))
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.strip().splitlines()[-1]
    proxy: Route53Proxy = world["proxy"]
    final = check_batches(proxy.batches(), zone="example.com.", start=[world["original"]],
                          health_checks=proxy.created_health_checks())
    assert {r.set_identifier: r.weight for r in final} == {"blue": 0, "green": 100}
    assert weights(world) == {"blue": 0, "green": 100}
    # Within the client's token bucket (burst 10, 10/s) as they arrive, arrival jitter aside.
    assert proxy.max_burst(10) <= 11
    # A scheduled rerun with all traffic already on green: exit 0 "nothing to do", no batch (issue 17).
    sent = len(proxy.batches())
    again = meshops(world, switchover_args(world))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr[-3000:]
    assert len(proxy.batches()) == sent
    back = meshops(world, [*MESHOPS, "--context", "green", "rollback", run_id])
    assert back.returncode == 0, back.stderr[-3000:]
    assert shift_weights(proxy)[-1] == {"blue": 100, "green": 0}
    assert records(world) == [world["original"]]


def test_target_503_at_25_percent_rolls_back_on_the_sandbox(world: dict[str, Any]) -> None:
    """The sandbox's ingress-503 fault on green once it has 25%: exit 1, one batch to 100/0, record restored."""
    def on_change(batch: dict[str, Any]) -> None:
        if any(c["ResourceRecordSet"].get("SetIdentifier") == "green" and c["ResourceRecordSet"].get("Weight") == 25
               for c in batch["Changes"]):
            subprocess.run([*MESHOPS, "sandbox", "fault", "--dir", str(world["dir"]), "--cluster", "green",
                            "ingress-503"], cwd=ROOT, capture_output=True, timeout=30, check=True)

    world["proxy"].on_change = on_change
    failed = meshops(world, switchover_args(world))
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "503" in failed.stderr
    assert shift_weights(world["proxy"]) == [{"blue": 90, "green": 10}, {"blue": 75, "green": 25},
                                             {"blue": 100, "green": 0}]
    assert records(world) == [world["original"]]


def test_dry_run_shows_the_plan_and_changes_nothing(world: dict[str, Any]) -> None:
    """--dry-run checks everything, prints each batch it would send, and sends none."""
    planned = meshops(world, switchover_args(world, "--dry-run"))
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "one batch: DELETE simple, CREATE" in planned.stdout
    assert "one batch: blue=75 green=25 (25% to green)" in planned.stdout
    assert world["proxy"].batches() == [] and world["proxy"].created_health_checks() == []
    assert records(world) == [world["original"]]
    # The AWS identity (sts get-caller-identity) is asked once, before any change (issue 17).
    who = [json.loads(line) for line in planned.stderr.splitlines() if '"dryrun.aws_identity"' in line]
    assert len(who) == 1 and who[0]["account"] and who[0]["arn"].startswith("arn:aws:")


@pytest.mark.parametrize(("extra", "why"), [
    (["--zone", "nope.org"], "no such hosted zone"),
    (["--record", "missing.example.com"], "no A, AAAA or CNAME record"),
    (["--steps", "10,150"], "outside 0-100"),
    (["--to", "blue"], "both 'blue'"),
    (["--to", "purple"], "purple"),
])
def test_bad_input_exits_2_on_the_sandbox(world: dict[str, Any], extra: list[str], why: str) -> None:
    """Unknown zone, missing record, a step above 100, from == to, an unknown context: exit 2, nothing sent."""
    args = switchover_args(world)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    refused = meshops(world, args)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert why in refused.stderr
    assert world["proxy"].batches() == [] and records(world) == [world["original"]]


def test_no_credentials_and_unreachable_context_exit_2(world: dict[str, Any], tmp_path: Path) -> None:
    """No AWS credentials, or a context whose API server is down: exit 2, nothing sent."""
    env = {k: v for k, v in world["env"].items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    refused = subprocess.run(switchover_args(world), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no usable AWS credentials" in refused.stderr
    dead = tmp_path / "kubeconfig"
    config = yaml.safe_load(Path(world["kubeconfig"]).read_text())
    green = next(c for c in config["contexts"] if c["name"] == "green")["context"]["cluster"]
    next(c for c in config["clusters"] if c["name"] == green)["cluster"]["server"] = "http://127.0.0.1:9"
    dead.write_text(yaml.safe_dump(config))
    refused = subprocess.run(switchover_args(world), cwd=ROOT, env={**world["env"], "KUBECONFIG": str(dead)},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "cannot reach context 'green'" in refused.stderr
    assert world["proxy"].batches() == [] and records(world) == [world["original"]]


def test_killed_mid_bake_resumes_and_finishes_on_the_sandbox(world: dict[str, Any]) -> None:
    """SIGKILL in the 25% bake; `meshops resume` (once the dead run's Lease lapses) finishes without resending."""
    child = subprocess.Popen(switchover_args(world, "--steps", "25,100", "--bake", "4s"), cwd=ROOT, env=world["env"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(shift_weights(world["proxy"])) < 1:
        time.sleep(0.05)
    time.sleep(1.0)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert weights(world) == {"blue": 75, "green": 25}
    runs = list((Path(world["env"]["MESHOPS_STATE_DIR"]) / "runs").iterdir())
    assert len(runs) == 1
    deadline = time.monotonic() + 90
    while True:
        resumed = meshops(world, [*MESHOPS, "--context", "green", "resume", runs[0].name])
        if resumed.returncode != 4 or time.monotonic() > deadline:  # 4: the killed run's Lease has not lapsed yet
            break
        time.sleep(2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "succeeded" in resumed.stdout
    assert shift_weights(world["proxy"]) == [{"blue": 75, "green": 25}, {"blue": 0, "green": 100}]
    assert weights(world) == {"blue": 0, "green": 100}


def _on_another_host(args: list[str]) -> list[str]:
    """``args`` run under another host name (a UTS namespace): a holder this host cannot prove dead,
    as a CI runner on another machine is. On this host a killed holder is provably dead
    (``domain/locks.holder_is_dead``) and its locks are taken at once; the lease rules are for the rest."""
    tool = {name: shutil.which(name) or name for name in ("unshare", "sh", "hostname")}
    return [tool["unshare"], "--user", "--map-root-user", "--uts", "--", tool["sh"], "-c",
            f'{tool["hostname"]} meshops-other-runner && exec "$@"', "sh", *args]


def _lock_record(world: dict[str, Any]) -> dict[str, Any] | None:
    data = world["client"].list_resource_record_sets(HostedZoneId=world["zone"], StartRecordName="_meshops-lock." + NAME,
                                                     StartRecordType="TXT", MaxItems="1")["ResourceRecordSets"]
    return next((r for r in data if r["Name"] == "_meshops-lock." + NAME and r["Type"] == "TXT"), None)


def _health_checks(world: dict[str, Any]) -> set[str]:
    return {h["Id"] for h in world["client"].list_health_checks()["HealthChecks"]}


def test_stale_record_lock_after_a_real_sigkill_is_taken_over_after_expiry(world: dict[str, Any]) -> None:
    """A switchover SIGKILLed while it holds the TXT lock and both Leases (on another host, so only
    expiry frees them): a second switchover at once exits 4 naming it and changes nothing; after
    --lock-ttl a new switchover names the half-finished run (exit 2), and `meshops rollback` takes
    the stale locks over, restores the record and leaves no TXT lock or health check behind."""
    probe = subprocess.run(_on_another_host([shutil.which("true") or "true"]), env=world["env"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot run a process under another host name here: {probe.stderr.decode()[-300:]}")
    checks_before = _health_checks(world)
    proxy: Route53Proxy = world["proxy"]
    victim = subprocess.Popen(_on_another_host(switchover_args(world, "--steps", "25,100", "--bake", "60s",
                                                               "--lock-ttl", "8s")),
                              cwd=ROOT, env=world["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Held: the TXT lock is in the zone and the 25% batch went out (sent only under all three locks).
        deadline = time.monotonic() + 30
        while not (shift_weights(proxy) and _lock_record(world)) and time.monotonic() < deadline:
            assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
            time.sleep(0.05)
    finally:
        victim.kill()  # SIGKILL: no release, no journal record
        victim.wait(timeout=10)
    killed_at = time.time()
    held = _lock_record(world)
    assert held is not None and "holder=" in held["ResourceRecords"][0]["Value"]
    assert "meshops-other-runner" in held["ResourceRecords"][0]["Value"]
    run_id = re.search(r"run=(\S+)", held["ResourceRecords"][0]["Value"])[1]  # type: ignore[index]
    # And both clusters' Leases, left behind with it (read as any client would).
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    for context in ("blue", "green"):
        leases = k8s.CoordinationV1Api(k8s_config.new_client_from_config(config_file=world["kubeconfig"], context=context))
        lease = leases.read_namespaced_lease("meshops-run-lock", "meshops-system")
        assert lease.spec.holder_identity.startswith(run_id + "@meshops-other-runner/"), lease.spec.holder_identity
        assert lease.spec.lease_duration_seconds == 8
    zone_before, sent = world["client"].list_resource_record_sets(HostedZoneId=world["zone"])["ResourceRecordSets"], len(proxy.batches())
    assert weights(world) == {"blue": 75, "green": 25}

    # (a) At once: exit 4 naming the dead holder; nothing sent, the zone as it was.
    second = meshops(world, switchover_args(world, "--lock-ttl", "8s"))
    assert second.returncode == 4, second.stderr[-3000:]
    assert "meshops-other-runner" in second.stderr and run_id in second.stderr
    assert len(proxy.batches()) == sent
    assert world["client"].list_resource_record_sets(HostedZoneId=world["zone"])["ResourceRecordSets"] == zone_before

    # (b) Once the locks have expired: a new switchover names the half-finished run (exit 2, nothing
    # sent); its rollback takes the stale TXT lock and Leases over and undoes it.
    # Every lock was last renewed before the kill: 8 s after it, all three have expired.
    time.sleep(max(0.0, killed_at + 8.2 - time.time()))
    again = meshops(world, switchover_args(world, "--lock-ttl", "8s"))
    assert again.returncode == 2, again.stderr[-3000:]
    assert run_id in again.stderr and f"meshops rollback {run_id}" in again.stderr
    assert len(proxy.batches()) == sent
    back = meshops(world, [*MESHOPS, "--context", "green", "rollback", run_id])
    assert back.returncode == 0, back.stderr[-3000:]
    assert records(world) == [world["original"]]
    assert _lock_record(world) is None
    assert _health_checks(world) == checks_before
    # The takeover was one batch replacing the dead run's exact value (a compare-and-swap).
    takeover = [b for b in proxy.batches()[sent:] if any(c["ResourceRecordSet"]["Name"] == "_meshops-lock." + NAME
                                                        and c["Action"] == "DELETE" for c in b["Changes"])]
    assert takeover and takeover[0]["Changes"][0]["ResourceRecordSet"]["ResourceRecords"] == held["ResourceRecords"]
