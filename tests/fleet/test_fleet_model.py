"""The fleet file: validation with file:line:column and did-you-mean, wave resolution, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshops.cli.main import main
from meshops.domain.errors import PlaybookInvalid
from meshops.fleet.model import json_schema, load_fleet

from .conftest import Harness, fleet_doc

CLUSTERS = {"c1": {"tier": "canary"}, "c2": {"tier": "prod", "region": "eu"}, "c3": {"tier": "prod", "region": "us"}}
WAVES = [{"name": "canary", "selector": {"tier": "canary"}},
         {"name": "eu", "selector": {"region": "eu"}},
         {"name": "rest", "selector": {}}]


def _problems(tmp: Path, text: str) -> list[str]:
    path = tmp / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(PlaybookInvalid) as exc:
        load_fleet(str(path))
    return exc.value.problems


def test_waves_take_each_cluster_once_in_file_order(harness: Harness) -> None:
    loaded = harness.write(fleet_doc(CLUSTERS, WAVES))
    assert [(w.name, w.clusters) for w in loaded.waves] == [("canary", ["c1"]), ("eu", ["c2"]), ("rest", ["c3"])]
    assert loaded.job_argv("c2") == ["upgrade", "--to", "1.25.2"]


def test_unknown_fields_name_file_line_column_and_suggest(tmp_path: Path) -> None:
    doc = fleet_doc(CLUSTERS, WAVES)
    doc["waves"][1]["max_paralel"] = 2
    doc["waves"][2]["clusters"] = ["c33"]
    text = yaml.safe_dump(doc, sort_keys=False)
    problems = _problems(tmp_path, text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "max_paralel" in ln)
    assert any(p.startswith(f"{tmp_path}/fleet.yaml:{line}:") and "waves[1].max_paralel: unknown field "
               "(did you mean 'max_parallel'?)" in p for p in problems), problems


def test_references_and_coverage_are_checked(tmp_path: Path) -> None:
    doc = fleet_doc({**CLUSTERS, "c4": {"tier": "edge"}}, [WAVES[0], {"name": "eu", "selector": {"region": "eu"}},
                                                          {"name": "none", "clusters": ["c33"]}])
    problems = "\n".join(_problems(tmp_path, yaml.safe_dump(doc)))
    assert "waves[2].clusters[0]: unknown cluster 'c33' (did you mean 'c3'?)" in problems
    assert "waves[2] (none): selects no cluster" in problems
    assert "clusters[3] (c4): no wave selects it" in problems and "clusters[2] (c3): no wave selects it" in problems


def test_the_fleet_sets_context_and_state_dir_itself(tmp_path: Path) -> None:
    doc = fleet_doc(CLUSTERS, WAVES, command="upgrade", args=["--to", "1.25.2", "--context=prod"])
    problems = _problems(tmp_path, yaml.safe_dump(doc))
    assert any("job.args[2]: --context is set by the fleet" in p for p in problems), problems


def test_job_needs_exactly_one_of_command_or_playbook(tmp_path: Path) -> None:
    doc = fleet_doc(CLUSTERS, WAVES, command="upgrade", playbook="x.yaml")
    assert any("job: give exactly one of command" in p for p in _problems(tmp_path, yaml.safe_dump(doc)))


def test_playbook_job_params_are_checked_against_the_playbook(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    doc = fleet_doc(CLUSTERS, WAVES, playbook=str(root / "playbooks" / "hello.yaml"), params={"greetin": "hi"})
    problems = "\n".join(_problems(tmp_path, yaml.safe_dump(doc)))
    assert "the playbook has no param 'greetin' (did you mean 'greeting'?)" in problems


def test_cli_validate_exits_2_on_a_bad_job_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet_doc(CLUSTERS, WAVES, command="upgrade", args=["--to", "1.25.2", "--wave-sise", "3"])))
    with pytest.raises(SystemExit) as exc:
        main(["fleet", "validate", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "job.args" in err and "--wave-sise" in err and "fleet.yaml:" in err


def test_schema_describes_waves() -> None:
    schema = json_schema()
    assert schema["title"] == "meshops fleet" and "waves" in schema["properties"]


def test_secret_params_stay_out_of_the_fleet_file(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    playbook = yaml.safe_load((root / "playbooks" / "hello.yaml").read_text())
    playbook["params"]["token"] = {"type": "string", "secret": True}
    (tmp_path / "pb.yaml").write_text(yaml.safe_dump(playbook))
    doc = fleet_doc(CLUSTERS, WAVES, playbook="pb.yaml", params={"token": "s3cret"})
    problems = "\n".join(_problems(tmp_path, yaml.safe_dump(doc)))
    assert "job.params.token: a secret param stays out of the fleet file" in problems
    assert "MESHOPS_PARAM_TOKEN" in problems


def test_exec_runs_one_clusters_job_with_its_context(harness: Harness) -> None:
    from click.testing import CliRunner

    from meshops.cli.fleet_cmds import _argv_for_exec
    from meshops.cli.main import cli

    loaded = harness.write(fleet_doc(CLUSTERS, WAVES))
    out = CliRunner().invoke(cli, ["fleet", "exec", loaded.path, "--cluster", "c22"])
    assert getattr(out.exception, "exit_code", None) == 2 and "did you mean 'c2'" in str(out.exception)

    class App:
        state_dir, kubeconfig = "/state", "/kc"

    argv = _argv_for_exec(App(), loaded, "c2")  # type: ignore[arg-type]
    assert argv[3:] == ["--context", "c2", "--state-dir", "/state", "--kubeconfig", "/kc", "upgrade", "--to", "1.25.2"]


def test_the_documented_example_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    with pytest.raises(SystemExit) as exc:
        main(["fleet", "validate", str(root / "docs" / "fleet-example.yaml")])
    assert exc.value.code == 0
    loaded = load_fleet(str(root / "docs" / "fleet-example.yaml"))
    assert [w.clusters for w in loaded.waves] == [["canary-eu"], ["stage-eu"], ["prod-eu-1"], ["prod-us-1"]]
