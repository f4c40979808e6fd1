"""`meshops fleet run` on many sandbox clusters: wall time against one cluster's run, and memory.

    python bench/fleet.py [--clusters 20] [--parallel 5] [--rollout-seconds 5]
    python bench/fleet.py --done-means        # the issue's six-cluster, three-wave checks

Speed (default): one sandbox with N fleet clusters plus one more, `solo`, each with the default
mesh (unrevisioned Istio 1.24.1, bookinfo); pods get ready --rollout-seconds after they start.
1. `meshops upgrade --to 1.25.2` on `solo` alone: one cluster's run, measured here;
2. `meshops fleet run` over the N clusters in one wave with `--parallel P`: its wall time against
   1.2 x ceil(N/P) x (1) (target: at most that); the peak RSS of the fleet process, of the fleet
   with its children at their peak together, and of the sandbox process.
Every cluster is then checked with kubectl (all bookinfo-frontend proxies on 1.25.2).

--done-means: six clusters c1..c6 in three waves (c1; c2+c3; c4, c5, c6 one at a time):
`proxy-not-ready` on c4 -> exit 1, c4 rolled back, c1-c3 upgraded, c5-c6 untouched; fault
cleared, `fleet resume` -> 0 and all six upgraded; `fleet rollback`; a fleet with an approval
gate before wave 3 -> 130, `meshops approve` + `fleet resume` -> 0; `fleet rollback`; a fleet
killed with SIGKILL mid-wave 2, `fleet resume` -> 0, all six upgraded. Checked with kubectl.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MESHOPS = [sys.executable, "-m", "meshops"]
KUBECTL = Path(os.environ.get("MESHOPS_KUBECTL_120", str(Path.home() / ".cache/meshops/kubectl-1.20/usr/bin/kubectl")))
JOB_ARGS = ["--to", "1.25.2", "--wave-size", "50", "--concurrency", "50", "--wave-timeout"]  # + --wave-timeout's value


WAVE_TIMEOUT = ["60s"]  # set from --wave-timeout


def sh(argv: list[str], env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def start(directory: Path, clusters: list[str], rollout: float) -> dict[str, str]:
    up = sh([*MESHOPS, "sandbox", "up", "--dir", str(directory), "--scenario", "fleet", "--clusters", ",".join(clusters),
             "--istio", "1.24.1", "--istio-versions", "1.24.1,1.25.2", "--timeout", "900",
             "--rollout-seconds", str(rollout)], dict(os.environ), timeout=1200)
    if up.returncode != 0:
        sys.exit(f"sandbox up failed: {up.stderr[-2000:]}")
    env = dict(os.environ)
    for line in (directory / "env").read_text().splitlines():
        m = re.match(r'export (\w+)="(.*)"$', line.strip())
        if m:
            env[m.group(1)] = m.group(2).replace("$PATH", env.get("PATH", ""))
    kubeconfig = directory / "kubeconfig-bench"
    kubeconfig.write_text((directory / "kubeconfig").read_text().replace("token: sandbox", f"token: {secrets.token_hex(16)}"))
    env.update(KUBECONFIG=str(kubeconfig), MESHOPS_LOG_FORMAT="json", PYTHONPATH=str(ROOT), HOME=str(directory))
    return env


def kubectl(env: dict[str, str], cluster: str, *args: str) -> str:
    return sh([str(KUBECTL), "--context", cluster, *args], env, timeout=60).stdout


def proxies(env: dict[str, str], cluster: str) -> set[str]:
    out = kubectl(env, cluster, "-n", "bookinfo-frontend", "get", "pods", "-o",
                  "jsonpath={range .items[*]}{.spec.containers[*].image}{' '}{end}")
    return {i.rsplit(":", 1)[1] for i in out.split() if "/proxyv2:" in i}


def fleet_file(directory: Path, name: str, clusters: list[str], waves: list[dict[str, Any]]) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "meshops.dev/v1", "kind": "Fleet", "metadata": {"name": name},
        "clusters": [{"name": c, "labels": {"n": c}} for c in clusters],
        "job": {"command": "upgrade", "args": [*JOB_ARGS, WAVE_TIMEOUT[0]]}, "waves": waves}))
    return path


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
    return out


def fleet_run(env: dict[str, str], state: Path, *args: str) -> tuple[float, int, int, subprocess.CompletedProcess[str]]:
    """Wall seconds, peak RSS of the fleet process, peak RSS of it and its children together (kB)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([*MESHOPS, "--state-dir", str(state), "fleet", "run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            peaks[0] = max(peaks[0], rss_kb(proc.pid))
            peaks[1] = max(peaks[1], sum(rss_kb(p) for p in tree(proc.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.monotonic() - t0
    sampler.join()
    return wall, peaks[0], peaks[1], subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def children_cpu() -> float:
    """CPU seconds of this bench's waited-for children (and theirs): meshops, its istioctl programs."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def speed(args: argparse.Namespace, directory: Path) -> int:
    names = [f"c{i}" for i in range(1, args.clusters + 1)]
    t0 = time.monotonic()
    env = start(directory, [*names, "solo"], args.rollout_seconds)
    print(f"sandbox up: {len(names) + 1} clusters in {time.monotonic() - t0:.1f}s "
          f"(pods ready {args.rollout_seconds:g}s after start)")
    sandbox_pid = int((directory / "sandbox.pid").read_text())
    t1, c1, s1 = time.monotonic(), children_cpu(), proc_cpu(sandbox_pid)
    solo = sh([*MESHOPS, "--context", "solo", "--state-dir", str(directory / "solo-state"), "upgrade", *JOB_ARGS, WAVE_TIMEOUT[0]], env)
    one, one_cpu, one_sbx = time.monotonic() - t1, children_cpu() - c1, proc_cpu(sandbox_pid) - s1
    if solo.returncode != 0:
        sys.exit(f"solo upgrade failed: {solo.stderr[-2000:]}")
    print(f"one cluster's run (solo): {one:.1f}s wall; CPU {one_cpu:.1f}s in meshops and its istioctl programs, "
          f"{one_sbx:.1f}s in the sandbox")
    path = fleet_file(directory, "bench", names, [{"name": "all", "selector": {}, "max_parallel": args.parallel}])
    c2, s2 = children_cpu(), proc_cpu(sandbox_pid)
    wall, fleet_peak, tree_peak, out = fleet_run(env, directory / "state", str(path), "--parallel", str(args.parallel))
    cpu, sbx = children_cpu() - c2, proc_cpu(sandbox_pid) - s2
    if out.returncode != 0:
        print(out.stdout[-3000:], out.stderr[-3000:])
        return 1
    bound = 1.2 * math.ceil(len(names) / args.parallel) * one
    print(f"fleet run: {len(names)} clusters, --parallel {args.parallel}: {wall:.1f}s; bound 1.2 x "
          f"ceil({len(names)}/{args.parallel}) x {one:.1f}s = {bound:.1f}s -> ratio {wall / bound:.2f} "
          f"({'ok' if wall <= bound else 'OVER'})")
    cores = len(os.sched_getaffinity(0))
    print(f"CPU during the fleet: {cpu:.0f}s in meshops processes + {sbx:.0f}s in the sandbox = "
          f"{(cpu + sbx) / wall:.2f} of {cores} core(s) busy on average (load average {os.getloadavg()[0]:.1f}); "
          f"{len(names)} runs need >= {(cpu + sbx) / cores:.0f}s of wall on {cores} core(s) at best")
    print(f"memory: fleet process peak {fleet_peak / 1024:.0f} MB; fleet + children at their peak "
          f"{tree_peak / 1024:.0f} MB ({tree_peak / 1024 / args.parallel:.0f} MB per running cluster); "
          f"sandbox process {rss_kb(sandbox_pid) / 1024:.0f} MB")
    bad = [c for c in names if proxies(env, c) != {"1.25.2"}]
    print(f"kubectl: {len(names) - len(bad)}/{len(names)} clusters with every bookinfo-frontend proxy on 1.25.2"
          + (f"; NOT: {', '.join(bad)}" if bad else ""))
    return 0 if wall <= bound and not bad else 1


def check(label: str, ok: bool) -> bool:
    print(f"  [{'ok' if ok else 'FAIL'}] {label}")
    return ok


def done_means(args: argparse.Namespace, directory: Path) -> int:
    names = [f"c{i}" for i in range(1, 7)]
    env = start(directory, names, args.rollout_seconds)
    state = directory / "state"
    waves = [{"name": "canary", "clusters": ["c1"]}, {"name": "staging", "clusters": ["c2", "c3"], "max_parallel": 2},
             {"name": "prod", "clusters": ["c4", "c5", "c6"]}]
    fleet = fleet_file(directory, "six", names, waves)
    gated = fleet_file(directory, "gated", names, [*waves[:2], {**waves[2], "gate": "approve"}])

    def meshops(*a: str) -> subprocess.CompletedProcess[str]:
        return sh([*MESHOPS, "--state-dir", str(state), *a], env)

    def all_on(version: str, which: list[str]) -> bool:
        return all(proxies(env, c) == {version} for c in which)

    ok = True
    print("1. proxy-not-ready on c4 (wave 3)")
    sh([*MESHOPS, "sandbox", "fault", "--dir", str(directory), "--cluster", "c4", "proxy-not-ready:revision=1-25-2"], env)
    run = meshops("fleet", "run", str(fleet))
    fid = run.stdout.splitlines()[0]
    ok &= check(f"fleet run exit {run.returncode} == 1", run.returncode == 1)
    ok &= check("c1-c3 upgraded (kubectl)", all_on("1.25.2", names[:3]))
    ok &= check("c4 rolled back, c5-c6 untouched (kubectl)", all_on("1.24.1", names[3:]))
    sh([*MESHOPS, "sandbox", "fault", "--dir", str(directory), "--clear"], env)
    res = meshops("fleet", "resume", fid)
    ok &= check(f"after clearing the fault, fleet resume exit {res.returncode} == 0", res.returncode == 0)
    ok &= check("all six upgraded (kubectl)", all_on("1.25.2", names))
    status = meshops("fleet", "status", str(fleet))
    print("\n".join("     " + ln for ln in status.stdout.splitlines()))
    ok &= check("fleet rollback exit 0, all six back on 1.24.1",
                meshops("fleet", "rollback", fid).returncode == 0 and all_on("1.24.1", names))
    print("2. approval gate before wave 3")
    run = meshops("fleet", "run", str(gated))
    fid = run.stdout.splitlines()[0]
    ok &= check(f"fleet run exit {run.returncode} == 130; c4-c6 untouched",
                run.returncode == 130 and all_on("1.24.1", names[3:]))
    ok &= check("meshops approve", meshops("approve", fid, "wave/prod").returncode == 0)
    res = meshops("fleet", "resume", fid)
    ok &= check(f"fleet resume exit {res.returncode} == 0; all six upgraded", res.returncode == 0 and all_on("1.25.2", names))
    ok &= check("fleet rollback", meshops("fleet", "rollback", fid).returncode == 0 and all_on("1.24.1", names))
    print("3. SIGKILL mid-wave 2")
    proc = subprocess.Popen([*MESHOPS, "--state-dir", str(state), "fleet", "run", str(fleet)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout is not None
    fid = proc.stdout.readline().strip()
    runs = state / "fleets" / "runs" / fid / "clusters" / "c3" / "runs"
    deadline = time.monotonic() + 600
    # Until c3's run (wave 2) is inside its upgrade waves; a fleet that ends first is a failure, not a hang.
    while (proc.poll() is None and time.monotonic() < deadline
           and not any('"waves' in p.read_text() for p in runs.glob("*/journal.jsonl"))):
        time.sleep(0.1)
    ok &= check("killed mid-wave 2 (the fleet was still running)", proc.poll() is None)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = meshops("fleet", "resume", fid)
    ok &= check(f"fleet resume exit {res.returncode} == 0; all six upgraded", res.returncode == 0 and all_on("1.25.2", names))
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", type=int, default=20)
    p.add_argument("--parallel", type=int, default=5)
    p.add_argument("--rollout-seconds", type=float, default=5.0)
    p.add_argument("--done-means", action="store_true")
    p.add_argument("--wave-timeout", default="", help="Each run's --wave-timeout (default 60s; 30s with --done-means, "
                   "where it is how long c4's fault takes to fail).")
    p.add_argument("--keep", action="store_true", help="Leave the sandbox and its directory.")
    args = p.parse_args()
    WAVE_TIMEOUT[0] = args.wave_timeout or ("30s" if args.done_means else "60s")
    if not KUBECTL.is_file():
        sys.exit(f"kubectl 1.20 not at {KUBECTL}: run .ci/get-kubectl.sh")
    directory = Path(tempfile.mkdtemp(prefix="meshops-fleet-bench-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still take the sandbox down
    try:
        return done_means(args, directory) if args.done_means else speed(args, directory)
    finally:
        if not args.keep:
            sh([*MESHOPS, "sandbox", "down", "--dir", str(directory)], dict(os.environ), timeout=120)
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
