"""Fleet tests: a fleet file writer and an executor whose children are tests/fleet/fake_meshops.py."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshops.fleet.executor import FleetExecutor, FleetOptions
from meshops.fleet.model import LoadedFleet, load_fleet

ROOT = Path(__file__).resolve().parents[2]
FAKE = [sys.executable, str(Path(__file__).with_name("fake_meshops.py"))]


def fleet_doc(clusters: dict[str, dict[str, str]], waves: list[dict[str, Any]], **job: Any) -> dict[str, Any]:
    return copy.deepcopy({"apiVersion": "meshops.dev/v1", "kind": "Fleet", "metadata": {"name": "test-fleet"},
                          "clusters": [{"name": n, "labels": labels} for n, labels in clusters.items()],
                          "job": job or {"command": "upgrade", "args": ["--to", "1.25.2"]}, "waves": waves})


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.plan_file = tmp / "plan.json"
        self.log_file = tmp / "effects.log"
        self.plan({})
        self.log_file.write_text("")

    def plan(self, plan: dict[str, Any]) -> None:
        self.plan_file.write_text(json.dumps(plan))

    def write(self, doc: dict[str, Any], name: str = "fleet.yaml") -> LoadedFleet:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return load_fleet(str(path))

    def env(self) -> dict[str, str]:
        import os

        return {**os.environ, "FAKE_FLEET_PLAN": str(self.plan_file), "FAKE_FLEET_LOG": str(self.log_file),
                "PYTHONPATH": str(ROOT)}

    def executor(self, **kw: Any) -> FleetExecutor:
        opts = FleetOptions(meshops=FAKE, env=self.env(), sleep=lambda s: __import__("time").sleep(min(s, 0.05)), **kw)
        return FleetExecutor(state_dir=self.tmp / "state", options=opts)

    def effects(self) -> list[tuple[str, str]]:
        return [tuple(line.split()[:2]) for line in self.log_file.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)
