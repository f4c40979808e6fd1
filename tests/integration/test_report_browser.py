"""HTML reports of real runs open in headless Chromium (Debian's) without errors; screenshots are kept.

Screenshots land in ``test-artifacts/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_report_cli import RICH, cli, run_playbook

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--enable-logging=stderr", "--v=0",
         # Nothing may be fetched: any name lookup fails, so a stray external asset shows as a console error.
         "--host-resolver-rules=MAP * ~NOTFOUND"]


@dataclass
class Opened:
    returncode: int
    console: list[str]  # page console messages and uncaught errors Chromium logged
    fetched: list[str]  # URLs the page itself asked for (Chromium's own update pings excluded)
    png: bytes
    dom: str


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("MESHOPS_SKIP_BROWSER") == "1":
            pytest.skip("MESHOPS_SKIP_BROWSER=1 and no chromium")
        pytest.fail("chromium is not installed: run .ci/get-chromium.sh (or set MESHOPS_SKIP_BROWSER=1)")
    return path


def _page_requests(net_log: Path) -> list[str]:
    # Requests made for the page carry its origin (file://) in their network isolation key;
    # Chromium's own background pings do not, so they are not counted against the report.
    data = json.loads(net_log.read_text())
    start_job = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return sorted({e["params"]["url"] for e in data["events"] if e["type"] == start_job
                   and str(e.get("params", {}).get("network_isolation_key", "")).startswith("file://")
                   and not str(e["params"].get("url", "")).startswith("file:")})


def open_in_chromium(page: Path, png: Path, height: int = 1000) -> Opened:
    """Screenshot ``page`` at 1400 px wide, dump its DOM, and collect its console and its requests."""
    chromium = _chromium()
    with tempfile.TemporaryDirectory(prefix="meshops-chromium-") as profile:
        net_log = Path(profile) / "net.json"
        proc = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}/p", f"--log-net-log={net_log}",
                               "--dump-dom", f"--screenshot={png}", f"--window-size=1400,{height}", page.as_uri()],
                              capture_output=True, text=True, timeout=60)
        fetched = _page_requests(net_log)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return Opened(returncode=proc.returncode, console=console, fetched=fetched,
                  png=png.read_bytes() if png.exists() else b"", dom=proc.stdout)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_console_check_catches_scripts_errors_and_external_assets(tmp_path: Path) -> None:
    """The checker is not vacuous: an uncaught error and an external stylesheet are both reported."""
    page = tmp_path / "bad.html"
    page.write_text('<html><head><link rel="stylesheet" href="https://cdn.example.invalid/x.css"></head>'
                    "<body><svg width='10' height='10'></svg><script>nope();</script></body></html>")
    opened = open_in_chromium(page, tmp_path / "bad.png")
    assert opened.returncode == 0
    assert any("Uncaught ReferenceError" in line for line in opened.console)
    assert opened.fetched == ["https://cdn.example.invalid/x.css"]


def _report(capsys: pytest.CaptureFixture[str], state: Path, run_id: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / f"report-{name}.html"
    code, _, _ = cli(capsys, "--state-dir", str(state), "report", run_id, "--out", str(page))
    assert code == 0
    return page


def check_report_page(page: Path, *, must_show: list[str], height: int = 1000) -> Opened:
    opened = open_in_chromium(page, page.with_suffix(".png"), height)
    assert opened.returncode == 0
    assert opened.console == [] and opened.fetched == []
    assert png_size(opened.png) == (1400, height) and len(opened.png) > 20_000  # a picture, not a blank page
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in opened.dom and 'class="timeline"' in opened.dom
    for text in must_show:
        assert text in opened.dom
    return opened


def test_reports_of_a_sample_run_and_a_failed_run_open_cleanly(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """hello.yaml and a run with retries and a rollback: no console output, a real screenshot, the SVG in the DOM."""
    state = tmp_path / "s"
    _, hello = run_playbook(capsys, state, ROOT / "playbooks/hello.yaml")
    check_report_page(_report(capsys, state, hello, "hello"), must_show=["per-wave", "soak", "succeeded"])
    pb = tmp_path / "rich.yaml"
    pb.write_text(RICH)
    code, rich = run_playbook(capsys, state, pb, "--var", f"dir={tmp_path}")
    assert code == 1
    opened = check_report_page(_report(capsys, state, rich, "failed-rollback"), height=1400,
                               must_show=["failed, rolled back", "undone in rollback", "Passed over (irreversible)"])
    assert opened.dom.count('class="bar"') >= 9  # prepare, 3 flaky-api attempts, 3 moves, one-way, 2 verify
