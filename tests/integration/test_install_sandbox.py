"""`meshops install` on the sandbox: each profile, composed profiles, the record a canary reuses, rollback.

One sandbox with a cluster per case (each starts with the sandbox's Istio 1.23.2, which the
tests purge where they need an empty cluster). meshops runs as a user runs it: a subprocess
with DIR/env's KUBECONFIG and PATH (istioctl, istioctl-1.23.2, istioctl-1.24.1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshops.drivers.kube import KubeClient

PROFILES = ["default", "demo", "minimal", "production", "minikube"]
CLUSTERS = [f"p-{p}" for p in PROFILES] + ["compose", "rollback", "fresh", "badinput", "analyze"]
KEEP_ISTIO = ("rollback", "analyze")  # these keep the sandbox's own (unrecorded) install


def env_of(directory: Path) -> dict[str, str]:
    env = dict(os.environ)
    for line in (directory / "env").read_text().splitlines():
        m = re.match(r'export (\w+)="(.*)"$', line)
        if m:
            env[m.group(1)] = m.group(2).replace("$PATH", env.get("PATH", ""))
    env["MESHOPS_LOG_FORMAT"] = "json"
    return env


class Sandbox:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.env = env_of(directory)

    def meshops(self, *argv: str, context: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meshops", "-q", "--state-dir", str(self.dir / "state"),
                               "--context", context, *argv], env=self.env, capture_output=True, text=True, timeout=180)

    def istioctl(self, *argv: str, context: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["istioctl", *argv, "--context", context], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def kube(self, context: str) -> KubeClient:
        return KubeClient(kubeconfig=str(self.dir / "kubeconfig"), context=context)


def deployments(kube: KubeClient) -> dict[str, Any]:
    return {d["metadata"]["name"]: d for d in kube.list("apps/v1", "Deployment", "istio-system").items}


def installed_spec(kube: KubeClient, revision: str = "default") -> dict[str, Any]:
    """What the running control plane says its settings are (istioctl writes no installed-state since
    1.21, reference §1): the ConfigMaps, the istiod Deployment, its HPA and PDB, read as meshops reads
    them, plus the version of the istiod image as ``tag``."""
    from meshops.domain.proxies import image_version
    from meshops.domain.recover import recover
    from meshops.ops.istio_settings import read_live

    live = read_live(kube, revision, "istio-system")
    assert live.istiod is not None, f"no istiod of revision {revision}"
    spec = recover(live).spec
    discovery = live.istiod["spec"]["template"]["spec"]["containers"][0]
    return {**spec, "tag": image_version(discovery["image"])}


def record(kube: KubeClient) -> dict[str, Any] | None:
    return kube.get("v1", "ConfigMap", "meshops-install-overlay", "istio-system")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("install")
    up = subprocess.run([sys.executable, "-m", "meshops", "sandbox", "up", "--dir", str(d), "--clusters", ",".join(CLUSTERS),
                         "--istio", "1.23.2", "--istio-versions", "1.23.2,1.24.1"], capture_output=True, text=True,
                        timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    sb = Sandbox(d)
    try:
        for context in CLUSTERS:
            if context not in KEEP_ISTIO:
                purge = sb.istioctl("uninstall", "--purge", "-y", context=context)
                assert purge.returncode == 0, purge.stderr
        yield sb
    finally:
        subprocess.run([sys.executable, "-m", "meshops", "sandbox", "down", "--dir", str(d)], capture_output=True,
                       timeout=60)


@pytest.fixture(scope="module")
def profile_runs(sandbox: Sandbox) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each profile installed into its own empty cluster, all at once."""
    with ThreadPoolExecutor(len(PROFILES)) as pool:
        futures = {p: pool.submit(sandbox.meshops, "install", "--profile", p, "--version", "1.23.2", context=f"p-{p}")
                   for p in PROFILES}
        return {p: f.result() for p, f in futures.items()}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_installs_and_is_recorded(sandbox: Sandbox, profile_runs: dict, profile: str) -> None:
    """Exit 0; the running control plane has the profile's settings; the overlay and its provenance are recorded."""
    run = profile_runs[profile]
    assert run.returncode == 0, run.stderr
    assert re.search(r" succeeded: Istio 1\.23\.2 revision default installed from " + profile, run.stdout)
    kube = sandbox.kube(f"p-{profile}")
    spec = installed_spec(kube)
    cm = record(kube)
    assert cm is not None
    ann = cm["metadata"]["annotations"]
    assert (ann["meshops.dev/install-profiles"], ann["meshops.dev/install-version"]) == (f'["{profile}"]', "1.23.2")
    dry = sandbox.meshops("install", "--profile", profile, "--version", "1.23.2", "--dry-run", context=f"p-{profile}")
    assert cm["data"]["overlay.yaml"] == "".join(line + "\n" for line in dry.stdout.splitlines() if not line.startswith("#"))
    assert spec["tag"] == "1.23.2"
    ready = {n: (d["status"].get("availableReplicas"), d["spec"]["replicas"]) for n, d in deployments(kube).items()}
    assert all(avail == want for avail, want in ready.values()), ready
    if profile == "default":
        assert set(ready) == {"istiod", "istio-ingressgateway"}
    elif profile == "demo":
        assert set(ready) == {"istiod", "istio-ingressgateway", "istio-egressgateway"}
        assert spec["meshConfig"]["accessLogFile"] == "/dev/stdout"
    elif profile == "minimal":
        assert set(ready) == {"istiod"}
    elif profile == "production":
        assert ready == {"istiod": (2, 2), "istio-ingressgateway": (2, 2)}
        assert spec["values"]["pilot"]["autoscaleMax"] == 5 and spec["values"]["pilot"]["autoscaleMin"] == 2
        assert spec["values"]["global"]["defaultPodDisruptionBudget"] == {"enabled": True}
        assert spec["values"]["global"]["proxy"]["resources"]["limits"] == {"cpu": "2000m", "memory": "1024Mi"}
    else:
        # No first-party-jwt any more (dropped in 1.22, reference §7); small, no autoscaling.
        assert spec["values"]["global"]["jwtPolicy"] == "third-party-jwt"
        assert spec["values"]["pilot"]["autoscaleEnabled"] is False
        assert set(ready) == {"istiod", "istio-ingressgateway"}


def test_composed_profiles_diff_and_canary_reuse(sandbox: Sandbox, tmp_path: Path) -> None:
    """production+minikube+--set installs; --diff shows nothing then one field; the record installs a 1.24.1 canary alike."""
    ctx = "compose"
    args = ["--profile", "production", "--profile", "minikube", "--set", "values.pilot.traceSampling=2"]
    run = sandbox.meshops("install", *args, "--version", "1.23.2", context=ctx)
    assert run.returncode == 0, run.stderr
    kube = sandbox.kube(ctx)
    spec = installed_spec(kube)
    assert spec["values"]["global"]["jwtPolicy"] == "third-party-jwt"
    assert spec["values"]["pilot"]["autoscaleEnabled"] is False  # minikube, composed last, wins
    assert deployments(kube)["istiod"]["spec"]["replicas"] == 2

    same = sandbox.meshops("install", *args, "--version", "1.23.2", "--diff", context=ctx)
    assert same.returncode == 0 and same.stdout.startswith("no changes"), same.stdout + same.stderr
    changed = sandbox.meshops("install", *args, "--set", "values.pilot.traceSampling=5", "--version", "1.24.1",
                              "--revision", "1-24-1", "--diff", context=ctx)
    assert "version: 1.23.2 -> 1.24.1" in changed.stdout and "revision: default -> 1-24-1" in changed.stdout
    assert "-      traceSampling: 2" in changed.stdout and "+      traceSampling: 5" in changed.stdout

    # A canary upgrade installs its revision from the record: same settings, new version.
    cm = record(kube)
    assert cm is not None
    recorded = tmp_path / "recorded.yaml"
    recorded.write_text(cm["data"]["overlay.yaml"])
    canary = sandbox.meshops("install", "--profile", str(recorded), "--version", "1.24.1", "--revision", "1-24-1",
                             "--set", "components.ingressGateways[name:istio-ingressgateway].enabled=false", context=ctx)
    assert canary.returncode == 0, canary.stderr
    new = installed_spec(kube, "1-24-1")
    assert new["tag"] == "1.24.1"
    for path in (("values", "pilot", "autoscaleEnabled"), ("meshConfig",),
                 ("components", "pilot", "k8s"), ("values", "global", "proxy", "resources")):
        old_v, new_v = spec, new
        for key in path:
            old_v, new_v = old_v[key], new_v[key]
        assert new_v == old_v, path
    deps = deployments(kube)
    assert deps["istiod-1-24-1"]["metadata"]["labels"]["operator.istio.io/version"] == "1.24.1"
    assert deps["istiod"]["metadata"]["labels"]["operator.istio.io/version"] == "1.23.2"
    ann = record(kube)["metadata"]["annotations"]  # type: ignore[index]
    assert (ann["meshops.dev/install-version"], ann["meshops.dev/install-revision"]) == ("1.24.1", "1-24-1")


def test_rollback_restores_an_install_meshops_did_not_make(sandbox: Sandbox) -> None:
    """Over the sandbox's own istioctl install, `meshops rollback` reinstalls it as it was and removes the record."""
    kube = sandbox.kube("rollback")
    before = installed_spec(kube)
    run = sandbox.meshops("install", "--profile", "production", "--version", "1.23.2", context="rollback")
    assert run.returncode == 0, run.stderr
    assert deployments(kube)["istiod"]["spec"]["replicas"] == 2
    back = sandbox.meshops("rollback", run.stdout.split()[0], context="rollback")
    assert back.returncode == 0 and "rolled_back" in back.stdout, back.stderr
    assert deployments(kube)["istiod"]["spec"]["replicas"] == 1
    after = installed_spec(kube)
    assert after["components"]["pilot"] == before["components"]["pilot"]
    assert after["values"]["pilot"] == before["values"]["pilot"]
    assert record(kube) is None


def test_rollback_of_a_first_install_uninstalls(sandbox: Sandbox) -> None:
    """On an empty cluster, rolling back the install leaves no istiod and no record."""
    kube = sandbox.kube("fresh")
    run = sandbox.meshops("install", "--profile", "minimal", "--version", "1.24.1", context="fresh")
    assert run.returncode == 0, run.stderr
    assert set(deployments(kube)) == {"istiod"}
    back = sandbox.meshops("rollback", run.stdout.split()[0], context="fresh")
    assert back.returncode == 0, back.stderr
    assert deployments(kube) == {} and record(kube) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--profile", "production", "--set", "values.pilot.nope=1"], "IstioOperator has no field spec.values.pilot.nope"),
    (["--profile", "prod"], "--profile prod: unknown profile"),
    (["--profile", "default", "--version", "1.22.0"], "no istioctl 1.22.0 found"),
])
def test_bad_input_changes_nothing_on_the_cluster(sandbox: Sandbox, argv: list[str], message: str) -> None:
    """Exit 2 naming the problem; the empty cluster stays empty (no Deployment, no record)."""
    run = sandbox.meshops("install", *argv, context="badinput")
    assert run.returncode == 2
    assert message in run.stderr
    kube = sandbox.kube("badinput")
    assert deployments(kube) == {} and record(kube) is None


def test_recorded_overlay_is_what_dry_run_prints(sandbox: Sandbox) -> None:
    """The ConfigMap's overlay.yaml parses to the same spec `--dry-run` shows (the canary's input)."""
    kube = sandbox.kube("p-production")
    cm = record(kube)
    assert cm is not None
    dry = sandbox.meshops("install", "--profile", "production", "--dry-run", "--version", "1.23.2", context="p-production")
    assert yaml.safe_load(cm["data"]["overlay.yaml"]) == yaml.safe_load(dry.stdout)


def test_analyze_issues_freeze_the_run_and_keep_the_install(sandbox: Sandbox) -> None:
    """A VirtualService naming a missing Gateway: analyze fails, the run freezes (exit 1), install and record stay."""
    kube = sandbox.kube("analyze")
    kube.create({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                 "metadata": {"name": "shop", "namespace": "default"},
                 "spec": {"hosts": ["shop.example.com"], "gateways": ["missing-gateway"],
                          "http": [{"route": [{"destination": {"host": "kubernetes.default.svc.cluster.local"}}]}]}})
    run = sandbox.meshops("install", "--profile", "demo", "--version", "1.23.2", context="analyze")
    assert run.returncode == 1
    assert "analyze failed: istioctl analyze found issues" in run.stderr and "IST0101" in run.stderr
    assert "frozen as the playbook says" in run.stderr
    assert installed_spec(kube)["meshConfig"]["accessLogFile"] == "/dev/stdout" and "istio-egressgateway" in deployments(kube)
    cm = record(kube)
    assert cm is not None and cm["metadata"]["annotations"]["meshops.dev/install-profiles"] == '["demo"]'
