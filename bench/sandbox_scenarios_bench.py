"""Startup time of `meshops sandbox up --scenario NAME`, and istioctl timings on the result.

    python bench/sandbox_scenarios_bench.py                 # fleet-200 (the <= 30 s bar)
    python bench/sandbox_scenarios_bench.py default blue-green fleet-200 --repeat 3

"Ready" means `up` returned: it waits until Istio is installed and every scenario workload
(Deployments, StatefulSets, DaemonSets, Jobs) is ready, so the figure is the user's wait.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _support import ROOT, env_file, rss_mb, sandbox_down, sandbox_up, sh

BAR_SECONDS = {"fleet-200": 30.0}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    result = sh(cmd, env, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr}")
    return time.perf_counter() - t0, result.stdout


def bench(scenario: str, base_env: dict[str, str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{scenario}-") as tmp:
        d = Path(tmp)
        ready = sandbox_up(d, "--scenario", scenario, "--timeout", "300", timeout=400)
        try:
            log = (d / "sandbox.log").read_text()
            phases = {m.group(1): float(m.group(2)) for m in re.finditer(
                r"(installed Istio [^ ]+ \(revision [^)]*\) on [^ ]+|scenario [^ ]+ ready) .*?in ([0-9.]+)s", log)}
            pid = int((d / "sandbox.pid").read_text())
            env = env_file(d / "env", base_env)
            t_version, version_out = timed(["istioctl", "version"], env)
            t_ps, ps_out = timed(["istioctl", "proxy-status"], env)
            t_analyze, _ = timed(["istioctl", "analyze", "-A"], env)
            proxies = re.search(r"data plane version: (.*)", version_out)
            return {
                "scenario": scenario,
                "ready_s": round(ready, 2),
                "phases_s": phases,
                "rss_mb": round(rss_mb(pid), 1),
                "data_plane": proxies.group(1) if proxies else "none",
                "proxy_status_rows": len(ps_out.splitlines()) - 1,
                "istioctl_version_s": round(t_version, 3),
                "istioctl_proxy_status_s": round(t_ps, 3),
                "istioctl_analyze_all_s": round(t_analyze, 3),
            }
        finally:
            sandbox_down(d)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=["fleet-200"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failed = False
    for scenario in args.scenarios:
        runs = [bench(scenario, env) for _ in range(args.repeat)]
        for r in runs:
            if args.json:
                print(json.dumps(r))
        ready = [float(r["ready_s"]) for r in runs]  # type: ignore[arg-type]
        last = runs[-1]
        bar = BAR_SECONDS.get(scenario)
        verdict = "" if bar is None else (" PASS" if max(ready) <= bar else " FAIL") + f" (bar {bar:g}s)"
        failed |= bar is not None and max(ready) > bar
        print(f"{scenario}: ready in {statistics.median(ready):.2f}s median of {len(ready)} "
              f"(min {min(ready):.2f}, max {max(ready):.2f}){verdict}")
        print(f"  phases: {last['phases_s']}  sandbox RSS {last['rss_mb']} MB")
        print(f"  data plane: {last['data_plane']}  proxy-status rows: {last['proxy_status_rows']}")
        print(f"  istioctl version {last['istioctl_version_s']}s, proxy-status {last['istioctl_proxy_status_s']}s, "
              f"analyze -A {last['istioctl_analyze_all_s']}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
