"""`meshops switchover` as a user runs it, against the sandbox's blue-green scenario: two simulated
clusters over HTTP, real ingress endpoints, the sandbox's moto Route53 (behind a recording proxy)."""

from __future__ import annotations

import os
import re
import secrets
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
    assert proxy.max_per_second() <= 10
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
