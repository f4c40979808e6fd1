"""`meshops tune` over 2,000 workloads against a local Prometheus (target <= 10 s, fixed query count).

    python bench/tune.py [--workloads 2000] [--pods 1] [--window 1d] [--scrape 60] [--resolution auto]
                         [--runs 3] [--cache DIR]

Builds cadvisor-like usage (CPU counters and memory gauges for every istio-proxy, plus istiod
and a gateway) and kube-state-metrics requests/limits, backfills them with promtool into a
fresh data dir, starts Debian's prometheus on 127.0.0.1 (tests/integration/prom_fixture.py),
then times `python -m meshops tune` end to end, as a user runs it (interpreter start-up
included), and the in-process gather. Prints the figures; asserts nothing about time.

Long windows are sampled every 5 minutes by default (--scrape): a week of 2,000 workloads is
then ~8 M samples, written in seconds and backfilled in ~15 s (a 60 s scrape is 40 M samples
and ~5 min). --cache DIR keeps the backfilled blocks, keyed by every parameter of the data.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshops.domain.durations import parse_duration  # noqa: E402
from meshops.domain.tuning import Policy, Recommendation  # noqa: E402
from meshops.drivers.prometheus import PrometheusClient  # noqa: E402
from meshops.ops.tune_gather import Scope, gather, resolution_for  # noqa: E402
from tests.integration import prom_fixture  # noqa: E402

SAFE = "bcdfghjklmnpqrstvwxz2456789"
MIB = 1024 * 1024


def suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SAFE) for _ in range(n))


def pods(workloads: int, per: int, seed: int = 7) -> list[tuple[str, str, str, float, float]]:
    """(namespace, pod, container, cpu cores, memory MiB) for every container tune looks at."""
    rng = random.Random(seed)
    out = [("istio-system", f"istiod-{suffix(rng, 9)}-{suffix(rng, 5)}", "discovery", 0.4, 600.0),
           ("istio-system", f"istio-ingressgateway-{suffix(rng, 9)}-{suffix(rng, 5)}", "istio-proxy", 0.8, 200.0)]
    for w in range(workloads):
        rs = suffix(rng, 9)
        cpu = rng.choice([0.005, 0.01, 0.02, 0.03, 0.05, 0.2])
        mem = rng.choice([30.0, 40.0, 50.0, 60.0, 120.0])
        for _ in range(per):
            out.append((f"ns{w % 50}", f"app{w}-{rs}-{suffix(rng, 5)}", "istio-proxy", cpu, mem))
    return out


def write_shard(path: Path, items: list[tuple[str, str, str, float, float]], start: int, end: int, scrape: int,
                seed: int) -> int:
    """OpenMetrics for ``items`` streamed to ``path`` one family at a time; returns the sample count.

    Streamed (a 7-day window at 2,000 workloads is ~8 M samples, ~1 GB of text) and written
    family by family, because OpenMetrics forbids interleaving families.
    """
    times = list(range(start + 15, end, scrape))
    count = 0
    with path.open("w", buffering=1 << 20) as out:
        rng = random.Random(seed)
        out.write("# TYPE container_cpu_usage_seconds counter\n")
        for ns, pod, container, cpu, _mem in items:
            name = f'container_cpu_usage_seconds_total{{container="{container}",namespace="{ns}",pod="{pod}"}} '
            total, prev, lines = 1000.0, times[0], []
            for t in times:
                total += cpu * (0.6 + 0.8 * rng.random()) * (t - prev)
                prev = t
                lines.append(f"{name}{total:.3f} {t}\n")
            out.write("".join(lines))
            count += len(lines)
        rng = random.Random(seed + 1000)
        out.write("# TYPE container_memory_working_set_bytes gauge\n")
        for ns, pod, container, _cpu, mem in items:
            name = f'container_memory_working_set_bytes{{container="{container}",namespace="{ns}",pod="{pod}"}} '
            base = mem * MIB
            out.write("".join(f"{name}{int(base * (0.8 + 0.4 * rng.random()))} {t}\n" for t in times))
            count += len(times)
        for family, extra, value in (("kube_pod_container_resource_requests", 'resource="cpu",unit="core"', "0.1"),
                                     ("kube_pod_container_resource_limits", 'resource="memory",unit="byte"',
                                      str(1024 * MIB))):
            out.write(f"# TYPE {family} gauge\n")
            for ns, pod, container, _cpu, _mem in items:
                name = f'{family}{{container="{container}",namespace="{ns}",pod="{pod}",{extra}}} '
                out.write("".join(f"{name}{value} {t}\n" for t in times[-20:]))
                count += len(times[-20:])
        out.write("# EOF\n")
    return count


def backfill(files: list[Path], data: Path, window: int) -> None:
    """promtool over every shard in parallel, into one data dir.

    promtool re-reads its whole input once per output block, and its default block is 2 h:
    a 7-day file would be parsed 84 times (round 1's 900 s timeout). The (hidden in 2.42)
    ``--max-block-duration`` lets one block span the window, so each file is read ~twice.
    """
    hours = max(2, -(-(window + 86400) // 3600))
    prom_fixture.promtool_blocks(files, data, extra=["--quiet", f"--max-block-duration={hours}h"], timeout=3600)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", type=int, default=2000)
    ap.add_argument("--pods", type=int, default=1, help="pods per workload")
    ap.add_argument("--window", default="1d")
    ap.add_argument("--scrape", type=int, default=0,
                    help="seconds between samples (default: 60 up to a 1-day window, 300 beyond: what long-window "
                         "data looks like once downsampled, and what keeps a 7-day backfill to minutes)")
    ap.add_argument("--shards", type=int, default=2, help="promtool processes in parallel")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--resolution", default="auto", help="passed to meshops tune --resolution (auto: as the CLI picks)")
    ap.add_argument("--cache", default=None, help="keep the backfilled blocks here and reuse them on the next run")
    args = ap.parse_args()

    window = int(parse_duration(args.window))
    scrape = args.scrape or (60 if window <= 86400 else 300)
    items = pods(args.workloads, args.pods)
    key = f"w{args.workloads}-p{args.pods}-{window}s-{scrape}s-v2"
    with tempfile.TemporaryDirectory(prefix="meshops-bench-tune-") as tmp:
        work = Path(args.cache) / key if args.cache else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if (work / "end").exists() and (work / "data").is_dir():
            end = int((work / "end").read_text())
            print(f"data: reusing {work} ({len(items)} containers over {args.window} every {scrape}s)")
        else:
            end = (int(time.time()) // 3600) * 3600
            t0 = time.perf_counter()
            files = [work / f"input-{i}.om" for i in range(args.shards)]
            samples = sum(write_shard(f, items[i::args.shards], end - window, end, scrape, seed=i)
                          for i, f in enumerate(files))
            gen_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            backfill(files, work / "data", window)
            backfill_s = time.perf_counter() - t0
            (work / "end").write_text(str(end))
            print(f"data: {args.workloads} workloads x {args.pods} pod(s) + istiod + gateway = {len(items)} containers, "
                  f"{samples:,} samples over {args.window} every {scrape}s "
                  f"(generated in {gen_s:.1f}s, backfilled in {backfill_s:.1f}s)")
        # Prometheus writes wal/, chunks_head/ and a lock into its data dir: run over a fresh copy.
        run_dir = Path(tmp) / "run"
        shutil.copytree(work / "data", run_dir / "data", ignore=shutil.ignore_patterns("wal", "chunks_head", "lock",
                                                                                      "queries.active"))
        server = prom_fixture.start(run_dir / "data", run_dir)
        try:
            client = PrometheusClient(server.url, timeout=120)
            step = resolution_for(window) if args.resolution == "auto" else int(parse_duration(args.resolution))
            print(f"resolution: {args.resolution} -> {step}s ({window // step} points per series)")
            scope = Scope(window_seconds=window, until=end, step_seconds=step)
            print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            for i in range(args.runs):
                prom_cpu = cpu_of(server.proc.pid)
                report = gather(client, scope, Policy())
                ok = sum(1 for r in report.rows if isinstance(r.result, Recommendation))
                print(f"in-process gather #{i + 1}: {report.seconds:.2f}s, {report.queries} queries, "
                      f"{len(report.rows)} workloads, {ok} with a recommendation, "
                      f"{sum(1 for r in report.rows if r.annotate)} annotated; "
                      f"prometheus cpu {cpu_of(server.proc.pid) - prom_cpu:.2f}s")
            for i in range(args.runs):
                prom_cpu = cpu_of(server.proc.pid)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                child = subprocess.Popen([sys.executable, "-m", "meshops", "tune", "--prometheus", server.url,
                                          "--window", args.window, "--until", str(end), "-o", "yaml", "--timeout",
                                          "120s", "--resolution", args.resolution],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                out, err = child.communicate()
                cli_s = time.perf_counter() - t0
                usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                if child.returncode != 0:
                    print(err)
                    return 1
                prom_s = cpu_of(server.proc.pid) - prom_cpu
                print(f"meshops tune (CLI, end to end) #{i + 1}: {cli_s:.2f}s target<=10s "
                      f"ratio_to_target={cli_s / 10:.2f} output={len(out):,} bytes; cpu: prometheus {prom_s:.2f}s, "
                      f"meshops {usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime:.2f}s; "
                      f"load average {os.getloadavg()[0]:.1f}")
        finally:
            prom_fixture.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
