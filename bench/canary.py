"""Canary upgrade on the fleet-200 sandbox (200 namespaces, 2,000 Deployments): figures, one run.

    python bench/canary.py [--concurrency 200] [--qps 50 --burst 100] [--rollout-seconds 5]
                           [--docs-namespaces 20] [--wave-args "--wave-size 200"]

In one sandbox, one after the other:
1. the time of one rollout on an idle cluster (median of 5 single restarts);
2. `meshops upgrade --strategy canary` 1.24.1 -> 1.25.2, K at a time, with the default wave
   options (growing waves: 1, 2, 4, ... namespaces; ``--wave-args`` to try others): the waves'
   time against the sum over waves of ceil(D_wave/K) x rollout time (target <= 1.2x), its API
   requests from the audit log against N + D (target <= 1.3x), its peak RSS (target <= 200 MB);
3. the Istio docs' procedure with kubectl, 1.25.2 -> 1.26.0 (istioctl install --revision, then per
   namespace: label, rollout restart, rollout status; one namespace after another), timed over
   the namespaces only (target: the whole meshops command >= 10x faster at K=200).

The sandbox's pods take ``--rollout-seconds`` to get ready (default 5 s; real rollouts take
30-90 s). With much faster rollouts the client-side rate limiter, not K, bounds the move: D
restart PATCHes at QPS take D/QPS seconds, so that floor is printed too. The rollout bound is
printed with the idle rollout time and with the mean rollout time meshops measured under its
own load (the sandbox is one Python process: 200 rollouts at once run slower each than one).
The kubectl procedure takes a rollout time per namespace, so by default it runs on 20
namespaces and its time is scaled to 200 (``--docs-namespaces 200`` runs them all).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _support import MESHOPS, sandbox_down, sandbox_env, sandbox_up, sh


def start(directory: Path, rollout_seconds: float) -> dict[str, str]:
    sandbox_up(directory, "--scenario", "fleet-200", "--istio", "1.24.1", "--istio-versions", "1.24.1,1.25.2,1.26.0",
               "--timeout", "600", "--rollout-seconds", str(rollout_seconds), timeout=900)
    return sandbox_env(directory, MESHOPS_STATE_DIR=str(directory / "state"))


def audit(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "audit-blue.jsonl").read_text().splitlines() if line.strip()]


def idle_rollout(env: dict[str, str], samples: int = 5) -> float:
    """Median seconds from one Deployment's restart PATCH to its rollout being complete (as kubectl
    rollout status judges it, seen through a watch), with nothing else running."""
    from meshops.drivers.kube import KubeClient
    from meshops.drivers.kube_waits import rollout_state

    kube = KubeClient(kubeconfig=env["KUBECONFIG"], context="blue")
    times = []
    for i in range(samples):
        ns = f"fleet-{199 - i:03d}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + str(i)
        t0 = time.perf_counter()
        out = kube.patch("apps/v1", "Deployment", "svc-00", {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": stamp}}}}}, ns, patch_type="strategic")
        generation = out["metadata"]["generation"]
        obj = out
        while not rollout_state(obj, generation).done:
            listed = kube.list("apps/v1", "Deployment", ns, field_selector="metadata.name=svc-00")
            obj = listed.items[0]
            if rollout_state(obj, generation).done:
                break
            for event in kube.watch("apps/v1", "Deployment", ns, field_selector="metadata.name=svc-00",
                                    resource_version=listed.resource_version, timeout=30):
                obj = event.object
                if rollout_state(obj, generation).done:
                    break
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def meshops_upgrade(directory: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    mark = len(audit(directory))
    argv = [*MESHOPS, "-q", "upgrade", "--to", "1.25.2", "--concurrency", str(args.concurrency),
            *args.wave_args.split(), "--qps", str(args.qps), "--burst", str(args.burst)]
    timer = shutil.which("time") or "/usr/bin/time"
    t0 = time.perf_counter()
    out = sh([timer, "-f", "RSS_KB=%M", *argv], env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"meshops upgrade failed ({out.returncode}): {out.stderr[-3000:]}")
    rss_kb = int(re.findall(r"RSS_KB=(\d+)", out.stderr)[-1])
    run_id = out.stdout.strip().splitlines()[-1]
    shown = json.loads(sh([*MESHOPS, "runs", "show", run_id, "-o", "json"], env).stdout)
    steps = {s["key"]: s for s in shown["steps"]}
    waves = [steps[f"waves[{i}]"] for i in range(len(steps)) if f"waves[{i}]" in steps]
    requests = audit(directory)[mark:]
    # The parity gate (its own step) and the post-change policy check (inside finalize).
    parity_s = float((steps.get("parity") or {}).get("duration_s") or 0.0)
    policy_s = float(((steps.get("finalize") or {}).get("outputs") or {}).get("policy_check_s") or 0.0)
    return {"wall": wall, "rss_mb": rss_kb / 1024, "waves": [w["outputs"] for w in waves],
            "waves_s": sum(w["duration_s"] for w in waves), "parity_s": parity_s, "policy_s": policy_s,
            "requests": len(requests),
            "by_agent": {a: sum(1 for r in requests if r.get("user_agent", "").startswith(a))
                         for a in ("meshops", "istioctl")},
            "patches": sum(1 for r in requests if r["verb"] == "patch" and r.get("resource") == "deployments"),
            "status_429": sum(1 for r in requests if r.get("status") == 429)}


def docs_procedure(env: dict[str, str], namespaces: int) -> dict[str, Any]:
    """istio.io canary upgrade, data plane part, one namespace after another (install not timed)."""
    install = sh(["istioctl-1.26.0", "install", "-y", "--set", "revision=1-26-0",
                  "--set", "profile=minimal"], env, timeout=600)
    if install.returncode != 0:
        sys.exit(f"istioctl install failed: {install.stderr[-2000:]}")
    t0 = time.perf_counter()
    for i in range(namespaces):
        ns = f"fleet-{i:03d}"
        for argv in (["kubectl", "label", "namespace", ns, "istio-injection-", "istio.io/rev=1-26-0", "--overwrite"],
                     ["kubectl", "rollout", "restart", "deployment", "-n", ns],
                     ["kubectl", "rollout", "status", "deployment", "-n", ns, "--timeout=300s"]):
            out = sh(argv, env)
            if out.returncode != 0:
                sys.exit(f"{' '.join(argv)} failed: {out.stderr[-1000:]}")
    return {"seconds": time.perf_counter() - t0, "namespaces": namespaces}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--qps", type=float, default=50.0)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--rollout-seconds", type=float, default=5.0, help="sandbox: seconds for a pod to get ready")
    ap.add_argument("--docs-namespaces", type=int, default=20,
                    help="namespaces the kubectl procedure moves (fewer: its time is scaled to 200)")
    ap.add_argument("--wave-args", default="", help='meshops wave options, e.g. "--wave-size 10" (default: none)')
    ap.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = ap.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="meshops-bench-canary-"))
    env = start(directory, args.rollout_seconds)
    try:
        n, d, k = 200, 2000, args.concurrency
        t_idle = idle_rollout(env)
        m = meshops_upgrade(directory, env, args)
        waves = m["waves"]
        moved = [len(w["restarted"]) + len(w["already"]) for w in waves]
        count = sum(w["rollouts"].get("count", 0) for w in waves)
        t_loaded = sum(w["rollouts"]["mean"] * w["rollouts"]["count"] for w in waves if w["rollouts"]) / max(count, 1)
        window = sum(w["restart_seconds"] for w in waves)
        batches = sum(math.ceil(dw / k) for dw in moved)
        print(f"fleet-200: N={n} namespaces, D={d} Deployments, K={k}, client QPS {args.qps:g} burst {args.burst}, "
              f"pods ready {args.rollout_seconds:g}s after start; meshops wave options: {args.wave_args or 'defaults'}")
        print(f"waves: {len(waves)}, namespaces {[len(w['namespaces']) for w in waves]}, workloads moved {moved} "
              f"(D={sum(moved)}); sum of ceil(D_wave/K) = {batches}")
        print(f"rollout time: idle {t_idle:.2f}s (median of 5); under load {t_loaded:.2f}s mean over {count} rollouts "
              f"(measured by meshops)")
        print(f"meshops: waves {m['waves_s']:.1f}s (their restart windows {window:.1f}s); whole upgrade "
              f"{m['wall']:.1f}s incl. checks, install, gateways, finalize")
        floor = d / args.qps if args.qps else 0.0
        print(f"  waves vs sum ceil(D_wave/K) x rollout, loaded: {batches} x {t_loaded:.2f}s = "
              f"{batches * t_loaded:.1f}s -> {m['waves_s'] / (batches * t_loaded):.2f}x (target <= 1.2x)")
        print(f"  waves vs sum ceil(D_wave/K) x rollout, idle:   {batches} x {t_idle:.2f}s = {batches * t_idle:.1f}s -> "
              f"{m['waves_s'] / (batches * t_idle):.2f}x (the sandbox does not run 200 rollouts as fast as one)")
        print(f"  client-side floor: D / QPS = {floor:.1f}s of restart PATCHes alone; vs max(bound, floor) = "
              f"{m['waves_s'] / max(batches * t_idle, floor):.2f}x")
        print(f"API requests (audit log, whole upgrade): {m['requests']} "
              f"(meshops {m['by_agent']['meshops']}, istioctl {m['by_agent']['istioctl']}; "
              f"{m['patches']} Deployment PATCHes; {m['status_429']} answered 429) vs N+D={n + d}: "
              f"{m['requests'] / (n + d):.2f}x (target <= 1.3x)")
        print(f"meshops peak RSS: {m['rss_mb']:.0f} MB (target <= 200 MB)")
        print(f"parity gate {m['parity_s']:.2f}s + post-change policy check {m['policy_s']:.2f}s = "
              f"{m['parity_s'] + m['policy_s']:.2f}s of the {m['wall']:.1f}s upgrade")
        docs = docs_procedure(env, args.docs_namespaces)
        scaled = docs["seconds"] * n / docs["namespaces"]
        note = "" if docs["namespaces"] == n else f" (measured on {docs['namespaces']}, scaled to {n})"
        print(f"Istio docs' procedure with kubectl, one namespace after another: {scaled:.1f}s{note}")
        print(f"  whole meshops upgrade is {scaled / m['wall']:.1f}x faster (target >= 10x); "
              f"its waves alone {scaled / m['waves_s']:.1f}x")
    finally:
        if not args.keep:
            sandbox_down(directory)
        else:
            print(f"sandbox kept: source {directory}/env")


if __name__ == "__main__":
    main()
