"""What the benchmarks share: running meshops and the sandbox, reading DIR/env, kubectl, RSS.

Imported as ``from _support import ...``: a benchmark runs as ``python bench/NAME.py``, so
this directory is first on ``sys.path`` (a test loading a benchmark by path puts it there).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
MESHOPS = [sys.executable, "-m", "meshops"]
SANDBOX = [sys.executable, "-m", "meshops.sandbox"]
# Where .ci/get-kubectl.sh puts Debian's kubectl 1.20 (tests/sandbox/conftest.py looks there too).
KUBECTL_120 = Path(os.environ.get("MESHOPS_KUBECTL_120",
                                  str(Path.home() / ".cache/meshops/kubectl-1.20/usr/bin/kubectl")))

_EXPORT = re.compile(r'export (\w+)="(.*)"$')
# Inside the double quotes `sandbox up` writes: a backslash escapes the next character, and
# $NAME refers to the environment (only ``:$PATH`` / ``:$PYTHONPATH`` suffixes are written).
_TOKEN = re.compile(r"\\(.)|\$(\w+)")


def sh(argv: list[str], env: Mapping[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the repository root; output captured as text, never raising on exit codes."""
    return subprocess.run(argv, cwd=ROOT, env=dict(env if env is not None else os.environ), capture_output=True,
                          text=True, timeout=timeout, check=False)


def env_file(path: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the exports of a sandbox's DIR/env applied."""
    env = dict(base if base is not None else os.environ)
    for line in path.read_text().splitlines():
        m = _EXPORT.match(line.strip())
        if m:
            env[m.group(1)] = _TOKEN.sub(lambda t: t.group(1) if t.group(1) is not None else env.get(t.group(2), ""),
                                         m.group(2))
    return env


def bench_kubeconfig(directory: Path, dest: Path | None = None) -> Path:
    """A copy of the sandbox's kubeconfig with a random token where it has the word "sandbox"
    (older sandboxes): meshops scrubs the kubeconfig token from what it logs and journals."""
    dest = dest or directory / "kubeconfig-bench"
    dest.write_text((directory / "kubeconfig").read_text().replace("token: sandbox", f"token: {secrets.token_hex(16)}"))
    return dest


def sandbox_up(directory: Path, *args: str, timeout: float = 900) -> float:
    """``meshops sandbox up --dir DIR ARGS...``; exits the benchmark when it fails. Returns its seconds."""
    t0 = time.perf_counter()
    up = sh([*MESHOPS, "sandbox", "up", "--dir", str(directory), *args], timeout=timeout)
    if up.returncode != 0:
        sys.exit(f"sandbox up failed ({up.returncode}):\n{up.stdout[-1000:]}{up.stderr[-2000:]}")
    return time.perf_counter() - t0


def sandbox_down(directory: Path) -> None:
    sh([*MESHOPS, "sandbox", "down", "--dir", str(directory)], timeout=120)


def sandbox_env(directory: Path, **extra: str) -> dict[str, str]:
    """The environment a user has after ``source DIR/env``, with the bench kubeconfig and JSON logs."""
    env = env_file(directory / "env")
    env.update(KUBECONFIG=str(bench_kubeconfig(directory)), MESHOPS_LOG_FORMAT="json", **extra)
    return env


def wait_serving(directory: Path, process: subprocess.Popen[bytes], timeout: float = 120) -> dict[str, str]:
    """Wait for ``sandbox serve`` to report ready in DIR/state.json; returns its cluster URLs by name."""
    state = directory / "state.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            sys.exit(f"sandbox serve exited with {process.returncode} (see {directory})")
        if state.exists():
            doc = json.loads(state.read_text() or "{}")
            if doc.get("ready"):
                return dict(doc["clusters"])
        time.sleep(0.02)
    sys.exit(f"sandbox serve not ready after {timeout:g}s (see {directory})")


class ApiConnection:
    """One keep-alive connection to a sandbox API server, as its kubeconfig says to reach it
    (HTTPS with the sandbox's CA and bearer token; plain HTTP for a server without them)."""

    def __init__(self, kubeconfig: Path, cluster: str) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        entry = next(c["cluster"] for c in doc["clusters"] if c["name"] == cluster)
        url = urlsplit(entry["server"])
        token = next((u["user"].get("token") for u in doc.get("users") or []), None)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if url.scheme == "https":
            context = ssl.create_default_context(cadata=base64.b64decode(entry["certificate-authority-data"]).decode())
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(url.hostname or "", url.port,
                                                                                 context=context)
        else:
            self.conn = http.client.HTTPConnection(url.hostname or "", url.port)

    def request(self, method: str, path: str, body: object = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": content_type} if data is not None else {})}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()


def kubectl_120() -> Path:
    """kubectl 1.20 (the oldest client meshops supports); exits when it is not installed."""
    if not KUBECTL_120.is_file() or not os.access(KUBECTL_120, os.X_OK):
        sys.exit(f"kubectl 1.20 not found at {KUBECTL_120}: run .ci/get-kubectl.sh (or set MESHOPS_KUBECTL_120)")
    return KUBECTL_120


def rss_mb(pid: int) -> float:
    """A process's resident set size (VmRSS) in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) of the samples."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]
