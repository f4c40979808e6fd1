"""A small chaos run (bench/chaos.py, fixed seeds): a canary upgrade SIGKILLed mid-way and resumed,
and a faulted switchover SIGKILLed between a Route53 change and its answer, then rolled back;
invariants by kubectl and by boto3 straight against moto."""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")]


def _chaos() -> Any:
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = chaos  # its dataclasses look their module up; chaos_switchover imports it
    spec.loader.exec_module(chaos)
    return chaos


def test_chaos_small_finds_no_invariant_violation() -> None:
    chaos = _chaos()
    out = io.StringIO()
    # Canary, seed 34: run 0 is killed after 13 writes and resumed.
    canary = chaos.chaos(1, 34, 1, False, out=out)
    # Switchover, seed 9: Route53 throttling, 500s and 503s, Kubernetes 429s and the journal
    # ConfigMap's updates failing; SIGKILLed once Route53 applied its 2nd change and before the
    # answer came back; then rolled back.
    switchover = chaos.chaos(1, 9, 1, False, out=out, kind="switchover")
    violations = chaos.summary(canary, 34, out=out) + chaos.summary(switchover, 9, out=out)
    print(out.getvalue())
    assert canary[0].plan.kill_after_writes and canary[0].plan.first_action == "resume"
    (sw,) = switchover
    assert sw.plan.kill == ("route53-unanswered", 2) and sw.killed and sw.plan.first_action == "rollback"
    assert violations == 0, out.getvalue()
    assert canary[0].status in ("succeeded", "rolled_back")
    assert sw.status == "rolled_back", out.getvalue()
