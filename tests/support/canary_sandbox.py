"""A sandbox for the canary-upgrade tests: started as a user starts it, driven over HTTP.

meshops runs as a subprocess with the sandbox's env (KUBECONFIG, PATH with the istioctl
programs). The kubeconfig's token is replaced by a random one: the sandbox's is the word
"sandbox", which meshops (rightly) scrubs from every log and journal.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meshops.domain.mesh import MeshSnapshot
from meshops.drivers.kube import KubeClient
from meshops.ops.istio_common import collect

ROOT = Path(__file__).resolve().parents[2]
MESHOPS = [sys.executable, "-m", "meshops"]
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
ISTIO_CONFIG = [("security.istio.io/v1", "PeerAuthentication"), ("networking.istio.io/v1", "DestinationRule"),
                ("networking.istio.io/v1", "VirtualService"), ("networking.istio.io/v1", "Gateway")]


class Sandbox:
    def __init__(self, directory: Path, *, scenario: str, clusters: list[str], istio: str = "1.24.1",
                 versions: tuple[str, ...] = ("1.24.1", "1.25.2", "1.26.0"), rollout_seconds: float = 0.05,
                 k8s_version: str | None = None) -> None:
        self.dir = directory
        argv = [*MESHOPS, "sandbox", "up", "--dir", str(directory), "--scenario", scenario,
                "--clusters", ",".join(clusters), "--istio", istio, "--istio-versions", ",".join(versions),
                "--rollout-seconds", str(rollout_seconds)]
        if k8s_version:
            argv += ["--k8s-version", k8s_version]
        up = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"sandbox up failed: {up.stderr[-3000:]}")
        self.env = dict(os.environ)
        for line in (directory / "env").read_text().splitlines():
            m = re.match(r'export (\w+)="(.*)"$', line.strip())
            if m:
                self.env[m.group(1)] = m.group(2).replace("$PATH", self.env.get("PATH", ""))
        self.kubeconfig = directory / "kubeconfig-test"
        self.kubeconfig.write_text((directory / "kubeconfig").read_text().replace(
            "token: sandbox", f"token: {secrets.token_hex(16)}"))
        self.env.update(KUBECONFIG=str(self.kubeconfig), MESHOPS_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
        self.env.pop("MESHOPS_STEP_MODULES", None)

    def stop(self) -> None:
        subprocess.run([*MESHOPS, "sandbox", "down", "--dir", str(self.dir)], cwd=ROOT, capture_output=True,
                       timeout=60, check=False)

    def argv(self, cluster: str, *args: str) -> list[str]:
        return [*MESHOPS, "--context", cluster, "--state-dir", str(self.dir / f"state-{cluster}"), *args]

    def meshops(self, cluster: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(cluster, *args), cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def popen(self, cluster: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(cluster, *args), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def kube(self, cluster: str) -> KubeClient:
        return KubeClient(kubeconfig=str(self.kubeconfig), context=cluster)

    def audit(self, cluster: str) -> list[dict[str, Any]]:
        path = self.dir / f"audit-{cluster}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def writes_since(self, cluster: str, mark: int) -> list[str]:
        return [f"{r['verb']} {r['path']}" for r in self.audit(cluster)[mark:] if r["verb"] in WRITES]

    def fault(self, cluster: str, *specs: str) -> None:
        subprocess.run([*MESHOPS, "sandbox", "fault", "--dir", str(self.dir), "--cluster", cluster, *specs],
                       cwd=ROOT, env=self.env, capture_output=True, timeout=30, check=True)

    def clear_faults(self) -> None:
        subprocess.run([*MESHOPS, "sandbox", "fault", "--dir", str(self.dir), "--clear"], cwd=ROOT, env=self.env,
                       capture_output=True, timeout=30, check=True)

    def run_id(self, cluster: str, nth: int = -1) -> str:
        runs = sorted(p.name for p in (self.dir / f"state-{cluster}" / "runs").iterdir())
        return runs[nth]

    def run_state(self, cluster: str, run_id: str) -> dict[str, Any]:
        out = self.meshops(cluster, "runs", "show", run_id, "-o", "json")
        assert out.returncode == 0, out.stderr
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def outputs(self, cluster: str, run_id: str) -> dict[str, Any]:
        return {s["key"]: s["outputs"] or {} for s in self.run_state(cluster, run_id)["steps"]}


def kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def workload_revisions(snap: MeshSnapshot) -> dict[str, list[str]]:
    """Each injected workload (and naked pod) -> the revisions its live pods run."""
    out: dict[str, set[str]] = {}
    for p in snap.live_proxies():
        key = f"{p.owner_kind or 'Pod'}/{p.namespace}/{p.owner_name or p.name}"
        out.setdefault(key, set()).add(p.revision or "")
    return {k: sorted(v) for k, v in sorted(out.items())}


def mesh_state(kube: KubeClient) -> dict[str, Any]:
    """What an upgrade (or its rollback) may change, normalized for comparison (no pod names, no RVs)."""
    snap = collect(kube)
    hooks = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for conf in kube.list("admissionregistration.k8s.io/v1", kind).items:
            hooks[f"{kind}/{conf['metadata']['name']}"] = {
                "labels": conf["metadata"].get("labels") or {},
                "webhooks": [{k: w.get(k) for k in ("name", "clientConfig", "namespaceSelector", "objectSelector")}
                             for w in conf.get("webhooks") or []]}
    istio_system = {}
    for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"), ("ServiceAccount", "v1"),
                      ("PodDisruptionBudget", "policy/v1")):
        for o in kube.list(api, kind, "istio-system").items:
            entry: dict[str, Any] = {"labels": o["metadata"].get("labels") or {}}
            if kind == "Deployment":
                entry["images"] = [c["image"] for c in o["spec"]["template"]["spec"]["containers"]]
                entry["replicas"] = o["spec"].get("replicas")
            istio_system[f"{kind}/{o['metadata']['name']}"] = entry
    return {
        "namespaces": {ns: {k: v for k, v in labels.items() if k in ("istio-injection", "istio.io/rev")}
                       for ns, labels in sorted(snap.namespaces.items()) if ns != "meshops-system"},
        "revisions": {name: r.version for name, r in snap.revisions.items()},
        "tags": snap.tags(), "default": snap.default_revision(), "validator": snap.validator_revision(),
        "workloads": workload_revisions(snap), "webhooks": hooks, "istio_system": istio_system,
        "dangling": snap.dangling_webhooks(),
    }


def istio_config(kube: KubeClient) -> dict[str, Any]:
    """PeerAuthentications, DestinationRules, VirtualServices, Gateways: spec and resourceVersion."""
    out = {}
    for api, kind in ISTIO_CONFIG:
        for o in kube.list(api, kind).items:
            meta = o["metadata"]
            out[f"{kind}/{meta['namespace']}/{meta['name']}"] = {"spec": o.get("spec"), "rv": meta["resourceVersion"]}
    return out
