"""The bad-input corpus against a cluster: every case exits 2 and the API server's audit log shows
no write (no Lease taken, no ConfigMap, nothing), and no run is created.

Cases: every malformed playbook in tests/data/bad_playbooks (run against the cluster), and the
bad options, params, templates and YAML in tests/data/bad_inputs (each says why it is there).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshops.cli.main import main
from meshops.sandbox.apiserver import Cluster
from tests.integration.test_kube_state import write_kubeconfig

DATA = Path(__file__).resolve().parents[1] / "data"
PLAYBOOKS = sorted((DATA / "bad_playbooks").glob("*.yaml"))
INPUTS = sorted((DATA / "bad_inputs").glob("*.yaml"))
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    tmp = tmp_path_factory.mktemp("corpus")
    with Cluster("blue", audit_path=tmp / "audit.jsonl") as c:
        yield c, write_kubeconfig(tmp / "kubeconfig", c.url, name="blue")


def _writes(audit: Path) -> list[dict[str, Any]]:
    if not audit.exists():
        return []
    return [e for e in map(json.loads, audit.read_text().splitlines()) if e.get("verb") in WRITES]


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_the_corpus_has_at_least_50_cases() -> None:
    assert len(PLAYBOOKS) + len(INPUTS) >= 50


def _check(cluster: tuple[Cluster, Path], tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str],
           expect: str = "") -> None:
    c, kubeconfig = cluster
    audit = c.audit.path
    assert audit is not None
    before = len(_writes(audit))
    state = tmp_path / "state"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = _run(["--state-dir", str(state), "--kubeconfig", str(kubeconfig), "--context", "blue", *argv])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expect in err, err
    assert _writes(audit)[before:] == []
    assert not (state / "runs").exists() or not any((state / "runs").iterdir())


@pytest.mark.parametrize("path", PLAYBOOKS, ids=[p.stem for p in PLAYBOOKS])
def test_malformed_playbooks_write_nothing(cluster: tuple[Cluster, Path], path: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _check(cluster, tmp_path, ["run", str(path)], capsys)


@pytest.mark.parametrize("path", INPUTS, ids=[p.stem for p in INPUTS])
def test_bad_inputs_write_nothing(cluster: tuple[Cluster, Path], path: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    case = yaml.safe_load(path.read_text())
    files = {}
    for key in ("playbook", "varfile"):
        if key in case:
            files[key] = tmp_path / f"{key}.yaml"
            files[key].write_text(case[key])
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in case["argv"]]
    _check(cluster, tmp_path, argv, capsys, case.get("expect", ""))


def test_the_audit_check_sees_a_run_that_gets_through(cluster: tuple[Cluster, Path], tmp_path: Path) -> None:
    """Negative control: a playbook that passes preflight takes the Lease, and the audit log shows it."""
    c, kubeconfig = cluster
    assert c.audit.path is not None
    before = len(_writes(c.audit.path))
    pb = tmp_path / "ok.yaml"
    pb.write_text("apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {name: ok}\n"
                  "steps:\n  - {id: look, uses: istio.discover}\n")
    _run(["--state-dir", str(tmp_path / "s"), "--kubeconfig", str(kubeconfig), "--context", "blue", "run", str(pb)])
    assert any(e.get("resource") == "leases" for e in _writes(c.audit.path)[before:])
