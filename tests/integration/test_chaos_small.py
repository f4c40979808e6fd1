"""A small chaos run (bench/chaos.py, 2 runs, fixed seed): a canary upgrade SIGKILLed mid-way and
resumed, and one faulted, SIGKILLed, its Lease stolen, then rolled back; invariants by kubectl."""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")]


def test_chaos_small_finds_no_invariant_violation() -> None:
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = chaos  # its dataclasses look their module up
    spec.loader.exec_module(chaos)
    out = io.StringIO()
    # Seed 34: run 0 is killed after 13 writes and resumed; run 1 gets API faults, a stolen
    # Lease and a kill later on, then is rolled back.
    results = chaos.chaos(2, 34, 2, False, out=out)
    violations = chaos.summary(results, 34, out=out)
    print(out.getvalue())
    assert all(r.plan.kill_after_writes for r in results)  # both killed mid-way
    assert violations == 0, out.getvalue()
    assert all(r.status in ("succeeded", "rolled_back", "never started") for r in results)
