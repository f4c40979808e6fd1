"""`sandbox up/status/down` as real processes, used through kubectl and the client like a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client, config

from meshops.sandbox.cli import sandbox


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshops.sandbox", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_up_status_down_two_sandboxes(tmp_path: Path, kubectl_for: Any) -> None:
    """Two sandboxes run side by side from their DIRs; kubectl and the client reach each context; down stops them."""
    first, second = tmp_path / "one", tmp_path / "two"
    up = run_cli("up", "--dir", str(first), "--clusters", "blue,green", "--k8s-version", "1.29.6")
    assert up.returncode == 0, up.stderr
    try:
        up2 = run_cli("up", "--dir", str(second), "--clusters", "solo")
        assert up2.returncode == 0, up2.stderr
        again = run_cli("up", "--dir", str(first))
        assert again.returncode != 0 and "already running" in again.stderr

        kubeconfig = yaml.safe_load((first / "kubeconfig").read_text())
        assert [c["name"] for c in kubeconfig["contexts"]] == ["blue", "green"]
        servers = {c["name"]: c["cluster"]["server"] for c in kubeconfig["clusters"]}
        # HTTPS with the CA in the kubeconfig, and the token written there required (401 without).
        assert all(s.startswith("https://127.0.0.1:") for s in servers.values()) and len(set(servers.values())) == 2
        assert all(c["cluster"]["certificate-authority-data"] for c in kubeconfig["clusters"])
        import ssl
        import urllib.error
        import urllib.request
        insecure = ssl._create_unverified_context()
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(servers["blue"] + "/api/v1/namespaces", context=insecure)
        assert denied.value.code == 401
        assert f'export KUBECONFIG="{first / "kubeconfig"}"' in (first / "env").read_text()

        status = run_cli("status", "--dir", str(first), "--json")
        report = json.loads(status.stdout)
        assert status.returncode == 0 and report["running"] and report["k8s_version"] == "1.29.6"
        assert {name: c["answering"] for name, c in report["clusters"].items()} == {"blue": True, "green": True}

        kubectl = kubectl_for("1.33")
        kubectl.env["KUBECONFIG"] = str(first / "kubeconfig")
        kubectl("--context", "green", "create", "deployment", "web", "--image=nginx", "--replicas=2")
        kubectl("--context", "green", "rollout", "status", "deployment/web", "--timeout=30s")
        assert "web" not in kubectl("--context", "blue", "get", "deploy", "-o", "name").stdout
        assert "v1.29.6" in kubectl("--context", "blue", "version", "-o", "json").stdout

        api = config.new_client_from_config(str(second / "kubeconfig"), context="solo")
        nodes = [n.metadata.name for n in client.CoreV1Api(api).list_node().items]
        api.close()
        assert nodes == ["solo-node-1", "solo-node-2", "solo-node-3"]

        audit = [json.loads(line) for line in (first / "audit-green.jsonl").read_text().splitlines()]
        assert any(e["verb"] == "create" and e["path"].endswith("/deployments") and e["status"] == 201 for e in audit)
        assert (first / "sandbox.log").exists()
    finally:
        down = run_cli("down", "--dir", str(first))
        down2 = run_cli("down", "--dir", str(second))
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert down2.returncode == 0
    assert not (first / "sandbox.pid").exists()
    stopped = run_cli("status", "--dir", str(first))
    assert stopped.returncode == 1 and "no sandbox running" in stopped.stdout


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    """Bad cluster names and options JSON are usage errors before anything starts."""
    runner = CliRunner()
    result = runner.invoke(sandbox, ["up", "--dir", str(tmp_path), "--clusters", "Blue,x y"])
    assert result.exit_code == 2 and "cluster names" in result.output
    result = runner.invoke(sandbox, ["up", "--dir", str(tmp_path), "--options-json", "[1]"])
    assert result.exit_code == 2 and "JSON object" in result.output
    result = runner.invoke(sandbox, ["down", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "no sandbox running" in result.output


def test_serve_runs_extensions(tmp_path: Path) -> None:
    """serve calls registered extensions with the clusters and options, and writes what they add."""
    module = tmp_path / "sandbox_ext_probe.py"
    module.write_text(
        "def configure(ctx):\n"
        "    ctx.env['PROBE'] = ','.join(ctx.clusters) + ':' + str(ctx.options['flag'])\n"
        "    ctx.state['probe'] = {'url': ctx.clusters['blue'].url}\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    directory = tmp_path / "dir"
    up = subprocess.run(
        [sys.executable, "-m", "meshops.sandbox", "up", "--dir", str(directory), "--clusters", "blue",
         "--options-json", '{"flag": 7}', "--extension", "sandbox_ext_probe:configure"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert 'export PROBE="blue:7"' in (directory / "env").read_text()
        state = json.loads((directory / "state.json").read_text())
        assert state["probe"]["url"] == state["clusters"]["blue"] and state["options"] == {"flag": 7}
    finally:
        run_cli("down", "--dir", str(directory))


@pytest.mark.parametrize("bad", ["nomodule_at_all:configure", "json:nothing_here"])
def test_serve_fails_loudly_on_a_broken_extension(tmp_path: Path, bad: str) -> None:
    """A broken extension stops startup with its error in the output, and leaves nothing running."""
    result = run_cli("up", "--dir", str(tmp_path), "--clusters", "blue", "--extension", bad, "--timeout", "20")
    assert result.returncode != 0 and "exited during startup" in result.stderr
    assert run_cli("status", "--dir", str(tmp_path)).returncode == 1
