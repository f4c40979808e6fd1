"""Reports of real switchovers on the sandbox (`blue-green`: two clusters, moto Route53, live ingress).

The weights a report draws are checked against the records Route53 (moto) really holds afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_report_browser import ARTIFACTS, check_report_page
from tests.support.switchover import Route53Proxy

ROOT = Path(__file__).resolve().parents[2]


def sandbox_env(directory: Path) -> dict[str, str]:
    """DIR/env (``export K="V"`` lines) applied over this process's environment."""
    env = dict(os.environ)
    for line in (directory / "env").read_text().splitlines():
        m = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        if m:
            value = shlex.split(m.group(2))[0] if m.group(2) else ""
            env[m.group(1)] = re.sub(r"\$(\w+)", lambda v: env.get(v.group(1), ""), value)
    return env


def meshops(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshops", *args], env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def blue_green(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("sandbox")
    up = meshops(dict(os.environ), "sandbox", "up", "--dir", str(directory), "--scenario", "blue-green")
    assert up.returncode == 0, up.stderr
    try:
        env = sandbox_env(directory)
        env["MESHOPS_STATE_DIR"] = str(directory / "state")
        # The seeded record has a 60 s TTL, and every step holds at least TTL + allowance: with
        # TTL 1 a three-step switchover takes seconds. Set through Route53 as an operator would.
        records = route53(env)
        app = next(r for r in records.list_resource_record_sets(HostedZoneId=env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"])
                   ["ResourceRecordSets"] if r["Name"] == "app.example.com.")
        records.change_resource_record_sets(HostedZoneId=env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"], ChangeBatch={
            "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {**app, "TTL": 1}}]})
        yield env
    finally:
        meshops(dict(os.environ), "sandbox", "down", "--dir", str(directory))


def route53(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL_ROUTE_53"], region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def weights_now(env: dict[str, str]) -> dict[str, int]:
    sets = route53(env).list_resource_record_sets(HostedZoneId=env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"])["ResourceRecordSets"]
    return {r["SetIdentifier"]: r["Weight"] for r in sets if r["Name"] == "app.example.com." and "SetIdentifier" in r}


def switchover(env: dict[str, str], source: str, target: str, probe_path: str,
               proxy: Route53Proxy | None = None) -> subprocess.CompletedProcess[str]:
    hosts = {c: env[f"MESHOPS_SANDBOX_INGRESS_HOST_{c.upper()}"] for c in ("blue", "green")}
    ports = {c: env[f"MESHOPS_SANDBOX_INGRESS_{c.upper()}"].rsplit(":", 1)[1] for c in ("blue", "green")}
    connect = [a for c in ("blue", "green") for a in ("--connect-to", f"{hosts[c]}:80:127.0.0.1:{ports[c]}")]
    if proxy is not None:
        env = {**env, "AWS_ENDPOINT_URL_ROUTE_53": proxy.url}
    return meshops(env, "switchover", "--from", source, "--to", target, "--zone", "example.com",
                   "--record", "app.example.com", "--steps", "10,50,100", "--bake", "0.3s",
                   "--propagation-allowance", "0s", "--probe-interval", "0.2s", "--health-check", "none",
                   "--probe", f"http://app.example.com{probe_path}", *connect)


def report(env: dict[str, str], run_id: str, name: str) -> tuple[dict[str, Any], Path]:
    data = meshops(env, "report", run_id, "-o", "json")
    assert data.returncode == 0, data.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / f"report-{name}.html"
    assert meshops(env, "report", run_id, "--out", str(page)).returncode == 0
    return json.loads(data.stdout), page


def test_a_switchover_report_shows_each_shift_its_bake_and_the_weights_route53_holds(
        blue_green: dict[str, str]) -> None:
    """0 -> 10 -> 50 -> 100% to green: one weight point per shift, every gate green, the last point is Route53's."""
    run = switchover(blue_green, "blue", "green", "/productpage")
    assert run.returncode == 0, run.stderr[-2000:]
    data, page = report(blue_green, run.stdout.strip(), "switchover")
    points = data["traffic"]["points"]
    assert [(p["step"], p["weights"]) for p in points] == [
        ("before", {"blue": 100, "green": 0}), ("shift[0]", {"blue": 90, "green": 10}),
        ("shift[1]", {"blue": 50, "green": 50}), ("shift[2]", {"blue": 0, "green": 100})]
    assert points[0]["ts"] == data["started_ts"]
    assert points[-1]["weights"] == weights_now(blue_green)
    bakes = data["traffic"]["bakes"]
    assert [b["step"] for b in bakes] == ["shift[0]", "shift[1]", "shift[2]"]
    assert all(g["ok"] for b in bakes for g in b["gates"]) and all(b["tripped"] is None for b in bakes)
    assert {g["name"].split(" http")[0] for b in bakes for g in b["gates"]} == {"probe blue", "probe green"}
    assert [w["label"] for w in data["waves"][0]["waves"]] == ["10%", "50%", "100%"]
    check_report_page(page, height=1500, must_show=["Traffic weights and probes", "share of traffic", "no gate tripped"])


def test_a_failed_switchover_report_shows_the_failed_shift_and_the_weights_put_back(
        blue_green: dict[str, str]) -> None:
    """A target that passes at 0 % and answers 503 at 10%: the attempted weights, the tripped bake, the rollback."""
    before = weights_now(blue_green)
    fault = ["sandbox", "fault", "--dir", blue_green["MESHOPS_SANDBOX_DIR"]]

    def break_blue(batch: dict[str, Any]) -> None:
        if any(c["ResourceRecordSet"].get("SetIdentifier") == "blue" and c["ResourceRecordSet"].get("Weight") == 10
               for c in batch["Changes"]):
            assert meshops(blue_green, *fault, "--cluster", "blue", "ingress-503").returncode == 0

    proxy = Route53Proxy(upstream=blue_green["AWS_ENDPOINT_URL_ROUTE_53"], on_change=break_blue)
    try:
        run = switchover(blue_green, "green", "blue", "/productpage", proxy)
    finally:
        proxy.close()
        meshops(blue_green, *fault, "--clear")
    assert run.returncode == 1, run.stderr[-2000:]
    run_id = re.search(r"run (\S+): shift\[0\] failed", run.stderr).group(1)  # type: ignore[union-attr]
    data, page = report(blue_green, run_id, "switchover-rollback")
    assert data["status"] == "rolled_back"
    points = data["traffic"]["points"]
    assert [(p["weights"], p["attempted"], p["rollback"]) for p in points] == [
        (before, False, False), ({"green": 90, "blue": 10}, True, False), (before, False, True)]
    assert weights_now(blue_green) == before == points[-1]["weights"]
    (bake,) = data["traffic"]["bakes"]
    assert bake["tripped"] == "step failed" and "HTTP 503" in bake["gates"][0]["detail"]
    assert [f["step"] for f in data["failures"] if f["final"]] == ["shift[0]"]
    check_report_page(page, height=1500, must_show=["failed, rolled back", "rollback", "HTTP 503"])
