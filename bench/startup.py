"""Cold start of the CLI against a bare interpreter, measured in the same run.

    python bench/startup.py [--runs 15]

Prints the median wall time of `python -c pass`, `meshops --help`, `meshops X --help` for
every command (and subcommand), and `meshops playbook validate playbooks/hello.yaml`, and each
ratio to the baseline (target: <= 3x). Heavy clients (kubernetes, boto3) must not be imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def imported_modules(argv: list[str]) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, cwd=ROOT)
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
    args = ap.parse_args()
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "meshops --help": [py, "-m", "meshops", "--help"],
    }
    for command in COMMANDS:
        cases[f"meshops {command} --help"] = [py, "-m", "meshops", *command.split(), "--help"]
    cases["meshops playbook validate"] = [py, "-m", "meshops", "playbook", "validate", "playbooks/hello.yaml"]
    timed(cases["meshops --help"], 2)  # warm the page cache and .pyc files
    results = {name: timed(argv, args.runs) for name, argv in cases.items()}
    base = results["python -c pass"]
    print(f"{'case':<28} {'median':>9} {'ratio':>7}")
    for name, t in results.items():
        print(f"{name:<28} {t * 1000:8.1f}ms {t / base:6.2f}x")
    worst = max((t / base, name) for name, t in results.items() if name != "python -c pass")
    print(f"worst: {worst[1]} {worst[0]:.2f}x")
    for name in ("meshops --help", "meshops playbook validate"):
        heavy = imported_modules(cases[name][1:]) & {"kubernetes", "boto3", "botocore", "urllib3", "moto"}
        print(f"{name}: heavy imports: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
