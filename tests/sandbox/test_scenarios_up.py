"""`meshops sandbox up` with the Istio flags, end to end, as a user drives it from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sandbox(*args, check=True, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "meshops.sandbox", *args], env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def shell(directory, script):
    """Run `script` the way the README tells users to: after `source DIR/env`, nothing else."""
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", f"set -e; source {directory}/env; {script}"], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def blue_green(tmp_path_factory):
    d = tmp_path_factory.mktemp("bg")
    faults_file = d / "faults.yaml"
    faults_file.write_text("faults:\n  - {cluster: green, fault: ingress-503}\n")
    sandbox("up", "--dir", str(d), "--scenario", "blue-green", "--istio", "1.25.2", "--istio-versions", "1.27.1",
            "--faults", str(faults_file))
    yield d
    sandbox("down", "--dir", str(d))


def test_env_and_files(blue_green):
    env = (blue_green / "env").read_text()
    for name in ("KUBECONFIG", "PATH", "MESHOPS_SANDBOX_INGRESS_BLUE", "MESHOPS_SANDBOX_INGRESS_GREEN",
                 "AWS_ENDPOINT_URL_ROUTE_53", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_DEFAULT_REGION", "MESHOPS_SANDBOX_FAULTS_URL"):
        assert f"export {name}=" in env
    assert sorted(p.name for p in (blue_green / "bin").iterdir()) == ["istioctl", "istioctl-1.25.2", "istioctl-1.27.1"]
    facts = json.loads((blue_green / "sandbox.json").read_text())
    assert set(facts["ingress"]) == {"blue", "green"}
    assert facts["route53"]["cluster"] == "blue"
    state = json.loads((blue_green / "state.json").read_text())
    assert set(state["clusters"]) == {"blue", "green"} and state["istio"]["version"] == "1.25.2"


def test_istioctl_on_path_talks_to_each_context(blue_green):
    out = shell(blue_green, "istioctl version --context blue; istioctl-1.27.1 proxy-status --context green")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["client version: 1.25.2", "control plane version: 1.25.2"]
    assert lines[3].split()[-2:] == ["SUBSCRIBED", "TYPES"]
    assert any(".bookinfo-backend" in line for line in lines[4:])


def test_route53_record_points_at_blue(blue_green):
    script = ("python3 - <<'EOF'\nimport boto3\nc = boto3.client('route53')\n"
              "zid = c.list_hosted_zones()['HostedZones'][0]['Id']\n"
              "for r in c.list_resource_record_sets(HostedZoneId=zid)['ResourceRecordSets']:\n"
              "    if r['Type'] == 'CNAME': print(r['Name'], r['TTL'], r['ResourceRecords'][0]['Value'])\nEOF")
    out = shell(blue_green, script.replace("python3", sys.executable))
    assert out.returncode == 0, out.stderr
    host = json.loads((blue_green / "sandbox.json").read_text())["ingress"]["blue"]["hostname"]
    assert out.stdout.split() == ["app.example.com.", "60", host]


def test_faults_from_file_and_command(blue_green):
    curl = ("for u in $MESHOPS_SANDBOX_INGRESS_BLUE $MESHOPS_SANDBOX_INGRESS_GREEN; do "
            "curl -s -o /dev/null -w '%{http_code} ' $u/productpage; done")
    assert shell(blue_green, curl).stdout.split() == ["200", "503"]  # green faulted from --faults
    listed = sandbox("fault", "--dir", str(blue_green), "--list").stdout
    assert "green\tingress-503" in listed
    sandbox("fault", "--dir", str(blue_green), "--clear")
    sandbox("fault", "--dir", str(blue_green), "--cluster", "blue", "ingress-503")
    assert shell(blue_green, curl).stdout.split() == ["503", "200"]
    sandbox("fault", "--dir", str(blue_green), "--clear", "--cluster", "blue")
    assert shell(blue_green, curl).stdout.split() == ["200", "200"]
    bad = sandbox("fault", "--dir", str(blue_green), "--cluster", "blue", "api-error:code=7", check=False)
    assert bad.returncode == 2 and "code must be one of" in bad.stderr
    audit = (blue_green / "audit-green.jsonl").read_text()
    assert '"verb":"fault-added"' in audit and '"verb":"fault-cleared"' in audit


def test_file_scenario_on_a_revision(tmp_path):
    manifest = tmp_path / "extra.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra, labels: {istio.io/rev: canary}}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: extra}\n"
        "spec: {replicas: 1, selector: {matchLabels: {app: api}}, template: {metadata: {labels: {app: api}},"
        " spec: {containers: [{name: api, image: nginx}]}}}\n")
    d = tmp_path / "sb"
    sandbox("up", "--dir", str(d), "--clusters", "solo", "--istio", "1.24.1", "--revision", "canary",
            "--scenario", str(manifest))
    try:
        out = shell(d, "istioctl proxy-status")
        assert out.returncode == 0, out.stderr
        (row,) = [line for line in out.stdout.splitlines() if ".extra" in line]
        assert row.split()[-2].startswith("istiod-canary-") and row.split()[-1] == "1.24.1"
        tags = shell(d, "istioctl tag list").stdout.split()
        assert tags[3:5] == ["default", "canary"]  # the first install became the default
    finally:
        sandbox("down", "--dir", str(d))


@pytest.mark.parametrize(("args", "message"), [
    (["--istio", "9.9.9"], "invalid Istio version"),
    (["--istio", "1.19.0"], "not modelled"),
    (["--scenario", "nosuch"], "no scenario 'nosuch'"),
    (["--istio", "1.24.1", "--revision", "a.b"], "invalid revision"),
    (["--istio", "1.24.1", "--revision", "x", "--unrevisioned"], "not both"),
])
def test_bad_flags_fail_before_starting(tmp_path, args, message):
    result = sandbox("up", "--dir", str(tmp_path / "x"), *args, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "x" / "sandbox.pid").exists()
