"""Cold start of the CLI against a bare interpreter, measured in the same run.

    python bench/startup.py [--runs 15] [--before DIR]   # DIR: e.g. `git archive main | tar -x -C DIR`

Prints the median wall time of `python -c pass`, `meshops --help`, `meshops X --help` for
every command (and subcommand), and `meshops playbook validate playbooks/hello.yaml`, and each
ratio to the baseline (target: <= 3x). Heavy clients (kubernetes, boto3) must not be imported.

The cases run interleaved (one run of each, round after round), so a burst of load on a shared
machine lands on every case alike instead of on whichever case ran then. Beside the wall time,
the child's CPU time (user + system, from wait4) is printed: it hardly moves with other
processes' load, so its ratio is the steadier figure when the machine is busy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# As installed, meshops runs from bytecode (pip compiles it; an editable install writes .pyc on
# first import). With PYTHONDONTWRITEBYTECODE set, as some CI and sandboxes do, every run would
# compile every module from source and the figures would measure the compiler.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(argv: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=ENV)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def timed_all(cases: dict[str, list[str]], runs: int, cwds: dict[str, Path] | None = None,
              ) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds per case, the cases interleaved round by round."""
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, argv in cases.items():
            wall, cpu = once(argv, (cwds or {}).get(name, ROOT))
            walls[name].append(wall)
            cpus[name].append(cpu)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in cases}


def imported_modules(argv: list[str]) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, cwd=ROOT, env=ENV)
    names = set()
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


COMMANDS = ["run", "plan", "resume", "rollback", "approve", "runs list", "runs show", "playbook validate", "report",
            "switchover", "install", "tune", "upgrade", "upgrade finalize", "status", "demo", "completion", "sandbox",
            "fleet", "fleet run"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout (say `git archive main`) timed in the same rounds, for before/after")
    args = ap.parse_args()
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "meshops --help": [py, "-m", "meshops", "--help"],
    }
    for command in COMMANDS:
        cases[f"meshops {command} --help"] = [py, "-m", "meshops", *command.split(), "--help"]
    cases["meshops playbook validate"] = [py, "-m", "meshops", "playbook", "validate", "playbooks/hello.yaml"]
    cwds: dict[str, Path] = {}
    if args.before is not None:
        for name in [n for n in cases if n.startswith("meshops")]:
            cases[f"{name} (before)"] = cases[name]
            cwds[f"{name} (before)"] = args.before.resolve()
    timed_all({"warm": cases["meshops --help"]}, 2)  # warm the page cache and .pyc files
    results = timed_all(cases, args.runs, cwds)
    base, base_cpu = results["python -c pass"]
    print(f"{'case':<43} {'wall':>9} {'ratio':>7} {'cpu':>9} {'ratio':>7}")
    for name in [n for n in results if n not in cwds]:
        for row in (name, f"{name} (before)"):
            if row in results:
                t, cpu = results[row]
                print(f"{row:<43} {t * 1000:7.1f}ms {t / base:6.2f}x {cpu * 1000:7.1f}ms {cpu / base_cpu:6.2f}x")
    mine = {name: r for name, r in results.items() if name != "python -c pass" and name not in cwds}
    worst = max((t / base, name) for name, (t, _) in mine.items())
    worst_cpu = max((cpu / base_cpu, name) for name, (_, cpu) in mine.items())
    print(f"worst (wall): {worst[1]} {worst[0]:.2f}x; worst (cpu): {worst_cpu[1]} {worst_cpu[0]:.2f}x")
    for name in ("meshops --help", "meshops playbook validate"):
        heavy = imported_modules(cases[name][1:]) & {"kubernetes", "boto3", "botocore", "urllib3", "moto"}
        print(f"{name}: heavy imports: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
