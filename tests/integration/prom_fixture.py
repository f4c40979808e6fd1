"""A real Prometheus (Debian's package) over data backfilled by promtool: no scraping.

Use it from a conftest in a test folder::

    from tests.integration.prom_fixture import prometheus  # noqa: F401  (the fixture)

    @pytest.fixture(scope="session")
    def prom_openmetrics() -> str:
        return OpenMetrics().counter(...).gauge(...).text()

The gotchas of ../shared/reference/test-substrate.md section 4, each handled here:
``# EOF`` closes the text; timestamps are seconds; each series is written in ascending
time (promtool silently drops out-of-order samples); retention is 100y (or old blocks are
deleted at start-up); the data dir is fresh for each session (Prometheus writes wal/,
lock...); readiness is awaited on ``/-/ready``; shutdown is waited for. A missing
prometheus or promtool FAILS the tests that need it: it never skips them.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CONFIG = "global: {scrape_interval: 1h}\nscrape_configs: []\n"
INSTALL_HINT = "install it with .ci/get-prometheus.sh (Debian's prometheus package)"


def binaries() -> tuple[str, str]:
    """Paths of prometheus and promtool; fails the calling test when either is missing."""
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not tool:
        pytest.fail(f"prometheus/promtool not found on PATH: {INSTALL_HINT}", pytrace=False)
    return prom, tool


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


@dataclass
class OpenMetrics:
    """OpenMetrics text for promtool, one metric family at a time (families must not interleave)."""

    _families: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def _family(self, family: str, kind: str) -> list[str]:
        if family not in self._families:
            self._families[family] = (kind, [])
        return self._families[family][1]

    def series(self, family: str, kind: str, labels: dict[str, str], points: Iterable[tuple[float, float]],
               *, suffix: str = "") -> OpenMetrics:
        lines = self._family(family, kind)
        last = None
        name = family + suffix + _labels(labels)
        for t, v in points:
            if last is not None and t <= last:
                raise ValueError(f"{name}: samples must be in ascending time ({t} after {last})")
            if t > 10**11:
                raise ValueError(f"{name}: timestamp {t} looks like milliseconds; OpenMetrics wants seconds")
            lines.append(f"{name} {v!r} {t!r}")
            last = t
        return self

    def counter(self, family: str, labels: dict[str, str], points: Iterable[tuple[float, float]]) -> OpenMetrics:
        return self.series(family, "counter", labels, points, suffix="_total")

    def gauge(self, family: str, labels: dict[str, str], points: Iterable[tuple[float, float]]) -> OpenMetrics:
        return self.series(family, "gauge", labels, points)

    def text(self) -> str:
        out = []
        for family, (kind, lines) in self._families.items():
            out.append(f"# TYPE {family} {kind}")
            out.extend(lines)
        out.append("# EOF")
        return "\n".join(out) + "\n"


@dataclass
class PromServer:
    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path


def backfill(om_text: str, workdir: Path, *, shards: list[str] | None = None) -> Path:
    """Blocks from OpenMetrics text (or several texts, one promtool each, in parallel), in a fresh data dir."""
    texts = shards if shards is not None else [om_text]
    files = []
    for i, text in enumerate(texts):
        src = workdir / f"input-{i}.om"
        src.write_text(text)
        files.append(src)
    data = workdir / "data"
    promtool_blocks(files, data)
    return data


def promtool_blocks(files: list[Path], data: Path, *, extra: list[str] | None = None, timeout: float = 900) -> None:
    """``promtool tsdb create-blocks-from openmetrics`` over every file in parallel, into a fresh ``data``
    dir; each input file is removed once its blocks moved in."""
    _, tool = binaries()
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    procs = []
    for src in files:
        blocks = src.with_suffix(".blocks")
        if blocks.exists():
            shutil.rmtree(blocks)
        procs.append((subprocess.Popen([tool, "tsdb", "create-blocks-from", "openmetrics", *(extra or []), str(src), str(blocks)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE), blocks, src))
    for proc, blocks, src in procs:
        _out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"promtool failed on {src} ({proc.returncode}): {err.decode()[-2000:]}")
        for block in blocks.iterdir():
            shutil.move(str(block), data / block.name)
        shutil.rmtree(blocks)
        src.unlink()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(data_dir: Path, workdir: Path, *, timeout: float = 60.0) -> PromServer:
    prom, _ = binaries()
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG)
    log_path = workdir / "prometheus.log"
    for _attempt in range(3):
        port = free_port()
        log = open(log_path, "wb")  # noqa: SIM115  (closed when the server stops)
        proc = subprocess.Popen(
            [prom, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn", "--query.max-samples=500000000"],
            stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return PromServer(url=url, port=port, data_dir=data_dir, proc=proc, log_path=log_path)
            time.sleep(0.05)
        stop_process(proc)
        log.close()
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    raise RuntimeError(f"prometheus did not become ready: {log_path.read_text(errors='replace')[-2000:]}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stop(server: PromServer) -> None:
    """SIGTERM, then wait for the process to exit (about 1 s) so the port and dir are free."""
    stop_process(server.proc)


@contextlib.contextmanager
def running(om_text: str, workdir: Path) -> Iterator[PromServer]:
    server = start(backfill(om_text, workdir), workdir)
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, prom_openmetrics: str) -> Iterator[PromServer]:
    """A Prometheus serving ``prom_openmetrics`` (a session fixture the including conftest defines)."""
    binaries()
    with running(prom_openmetrics, tmp_path_factory.mktemp("prometheus")) as server:
        yield server
