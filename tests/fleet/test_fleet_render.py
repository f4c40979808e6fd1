"""Rendered Argo Workflows, GitHub Actions and GitLab CI files validate against real schemas."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from hera.workflows.models import CronWorkflow, Workflow

from meshops.cli.main import cli
from meshops.fleet import render_argo, render_ci

from .conftest import Harness, fleet_doc

ARGO_MODELS = Path("/opt/meshops-npm/argo-workflows")
SIX = {f"c{i}": {"tier": t} for i, t in enumerate(["canary", "staging", "staging", "prod", "prod", "prod"], 1)}
WAVES = [{"name": "canary", "selector": {"tier": "canary"}, "soak": "30s"},
         {"name": "staging", "selector": {"tier": "staging"}, "max_parallel": 2, "gate": "approve"},
         {"name": "prod", "selector": {"tier": "prod"}, "max_parallel": 2, "max_failures": 1, "gate": "pause"}]


def _loaded(harness: Harness) -> Any:
    doc = fleet_doc(SIX, WAVES)
    doc["schedule"] = "0 6 * * 2"
    doc["clusters"][5]["service_account"] = "meshops"
    return harness.write(doc)


def _schema_check(builtin: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", builtin, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def _resolves(line: str) -> None:
    """A `meshops ...` line of a rendered script parses with meshops's own click tree."""
    argv = [a for a in shlex.split(line)[1:]]
    with click.Context(cli) as root:
        group = cli.get_command(root, argv[0])
        assert isinstance(group, click.Group)
        sub = group.get_command(root, argv[1])
        assert sub is not None, line
        sub.make_context(argv[1], argv[2:], parent=root)


def test_argo_workflow_fits_hera_models_and_the_dag_shape(harness: Harness) -> None:
    docs = render_argo.render(_loaded(harness))
    wf, cron = Workflow.model_validate(docs[0]), CronWorkflow.model_validate(docs[1])
    assert cron.spec.schedules == ["0 6 * * 2"]
    templates = {t.name: t for t in wf.spec.templates or []}
    chain = [(t.name, t.dependencies) for t in templates["fleet"].dag.tasks]  # type: ignore[union-attr]
    assert chain == [("wave-canary", None), ("soak-canary", ["wave-canary"]), ("approve-staging", ["soak-canary"]),
                     ("wave-staging", ["approve-staging"]), ("approve-prod", ["wave-staging"]), ("wave-prod", ["approve-prod"])]
    assert templates["approval"].suspend is not None and templates["soak-canary"].suspend.duration == "30s"  # type: ignore[union-attr]
    staging, prod = templates["wave-staging"], templates["wave-prod"]
    assert staging.parallelism == 2 and staging.dag.fail_fast is True  # type: ignore[union-attr]
    assert prod.dag.fail_fast is False and [t.name for t in prod.dag.tasks][-1] == "budget"  # type: ignore[union-attr]
    c1 = templates["job-c1"]
    assert c1.volumes[0].secret.secret_name == "meshops-kubeconfig-c1"  # type: ignore[index,union-attr]
    assert c1.container.args[:2] == ["--context", "c1"] and "upgrade" in c1.container.args  # type: ignore[union-attr]
    assert c1.outputs.artifacts[0].path == render_argo.STATE  # type: ignore[union-attr,index]
    assert templates["job-c6"].service_account_name == "meshops" and not templates["job-c6"].volumes


@pytest.mark.skipif(not (ARGO_MODELS / "validate.mjs").exists(), reason="run .ci/get-argo-models.sh (needs node/npm)")
def test_argo_documents_validate_against_argo_schema(harness: Harness, tmp_path: Path) -> None:
    docs = render_argo.render(_loaded(harness))
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(docs))
    out = subprocess.run(["node", str(ARGO_MODELS / "validate.mjs"), str(path)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["Workflow:", "valid", "CronWorkflow:", "valid"]
    docs[0]["spec"]["templates"][1]["parallelism"] = "two"  # the validator is not a rubber stamp
    path.write_text(json.dumps(docs))
    bad = subprocess.run(["node", str(ARGO_MODELS / "validate.mjs"), str(path)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 1 and "parallelism" in bad.stdout


def test_github_workflow_fits_the_schema_and_chains_waves(harness: Harness, tmp_path: Path) -> None:
    doc = render_ci.github(_loaded(harness), "fleets/prod.yaml")
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ok = _schema_check("vendor.github-workflows", path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    jobs = doc["jobs"]
    assert list(jobs) == ["wave-canary", "soak-canary", "wave-staging", "wave-prod"]
    assert jobs["wave-staging"]["needs"] == ["soak-canary"] and jobs["wave-staging"]["environment"]
    staging = jobs["wave-staging"]["strategy"]
    assert staging["max-parallel"] == 2 and staging["fail-fast"] is True
    assert [m["cluster"] for m in staging["matrix"]["include"]] == ["c2", "c3"]
    assert doc["permissions"]["id-token"] == "write"
    _resolves(jobs["wave-prod"]["steps"][3]["run"].replace('"$CLUSTER"', "c4"))
    del doc["jobs"]["wave-prod"]["runs-on"]  # the schema is not a rubber stamp
    path.write_text(yaml.safe_dump(doc))
    assert _schema_check("vendor.github-workflows", path).returncode == 1


def test_gitlab_pipeline_fits_the_schema_with_manual_gates(harness: Harness, tmp_path: Path) -> None:
    doc = render_ci.gitlab(_loaded(harness), "fleets/prod.yaml")
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ok = _schema_check("vendor.gitlab-ci", path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert doc["stages"] == ["wave-canary", "soak-canary", "gate-staging", "wave-staging", "gate-prod",
                             "wave-prod-1", "wave-prod-2"]
    assert doc["approve staging"]["when"] == "manual" and doc["approve staging"]["allow_failure"] is False
    assert [m["CLUSTER"] for m in doc["wave-prod-1"]["parallel"]["matrix"]] == ["c4", "c5"]
    assert doc[".meshops-cluster"]["resource_group"] == "meshops-$CLUSTER"
    _resolves(doc[".meshops-cluster"]["script"][1].replace('"$FLEET"', "f.yaml").replace('"$CLUSTER"', "c1"))
    doc["approve staging"]["when"] = "sometimes"
    path.write_text(yaml.safe_dump(doc))
    assert _schema_check("vendor.gitlab-ci", path).returncode == 1


def test_render_command_writes_each_engine(harness: Harness, tmp_path: Path) -> None:
    from click.testing import CliRunner

    loaded = _loaded(harness)
    for engine in ("argo", "github", "gitlab"):
        out = CliRunner().invoke(cli, ["fleet", "render", loaded.path, "--engine", engine])
        assert out.exit_code == 0, out.output
        assert list(yaml.safe_load_all(out.output))
