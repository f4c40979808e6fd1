"""What the Argo render *means*, not only that it fits Argo's schema.

Argo itself (a Go controller) cannot run here. What can: the expr-lang engine Argo evaluates
expression tags and ``depends`` with (github.com/expr-lang/expr v1.17.8, as in Argo v4.1.2; v3.7.18
has v1.17.7), compiled into the ``enchanter-golem`` wheel (PyPI). These tests build the variables
the way Argo's controller does and let that engine evaluate the rendered expressions; the DAG
rules Argo's validator applies beyond the schema are restated below with their source. Sources:
argoproj/argo-workflows at v3.7.18 (paths beside each rule).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

from meshops.fleet import render_argo

from .conftest import Harness, fleet_doc

# Names that would trip the old render: a leading digit, hyphens, and a cluster called like the check task.
CLUSTERS = {"1st": {"tier": "prod"}, "eu-west-1": {"tier": "prod"}, "budget": {"tier": "prod"}, "c4": {"tier": "prod"}}
WAVES = [{"name": "prod", "selector": {"tier": "prod"}, "max_parallel": 2, "max_failures": 1}]
PHASES = ("Succeeded", "Failed", "Error")  # how a container task with no `when`/`depends` can end

needs_expr = pytest.mark.skipif(importlib.util.find_spec("golem") is None,
                                reason="the expr-lang engine (enchanter-golem, a test extra) is not installed")

# Runs in a child: the engine is a Go c-shared library, kept out of the pytest process (signals).
_EVAL = """
import json, sys
import golem
engine = golem.Engine(strict_vars=False)
out = []
for src, env in json.load(sys.stdin):
    try:
        out.append({"value": engine.eval(src, env)})
    except golem.GolemError as e:
        out.append({"error": f"{type(e).__name__}: {e}"})
print(json.dumps(out))
"""


def _expr(cases: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-c", _EVAL], input=json.dumps(cases), capture_output=True, text=True,
                          timeout=60, check=True)
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def _argo_env(flat: dict[str, str]) -> dict[str, Any]:
    """Argo's expression env: the scope's dotted keys expanded into nested maps
    (util/expr/env GetFuncMap -> util/expand, doublerebel/bellows)."""
    env: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = env
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return env


def _task_results(phase: str) -> dict[str, bool]:
    """workflow/controller/dag.go evaluateDependsLogic: one TaskResults per dependency."""
    return {"Succeeded": phase == "Succeeded", "Failed": phase == "Failed", "Errored": phase == "Error",
            "Skipped": phase == "Skipped", "Omitted": phase == "Omitted", "Daemoned": False,
            "AnySucceeded": False, "AllFailed": False}


def _dag_problems(template: dict[str, Any]) -> list[str]:
    """The DAG rules of workflow/validate/validate.go (validateDAG, isValidWorkflowFieldName) that
    no JSON schema carries."""
    tasks = template["dag"]["tasks"]
    names = [t["name"] for t in tasks]
    depends = any(t.get("depends") for t in tasks)
    problems = [f"duplicate task {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for t in tasks:
        name = t["name"]
        if not re.fullmatch(r"[a-zA-Z0-9][-a-zA-Z0-9]*", name) or len(name) > 128:
            problems.append(f"{name}: not a workflow field name")
        if (depends or t.get("dependencies")) and name[0].isdigit():
            problems.append(f"{name}: name cannot begin with a digit when using 'depends' or 'dependencies'")
        if depends and t.get("dependencies"):
            problems.append(f"{name}: cannot use both 'depends' and 'dependencies'")
        if depends and t.get("continueOn"):
            problems.append(f"{name}: cannot use 'continueOn' when using 'depends'")
        # common/ancestry.go taskNameRegex: the operands of `depends` must be tasks of this DAG.
        for ref in re.findall(r"([a-zA-Z0-9][-a-zA-Z0-9]*?)\.[A-Z][a-zA-Z]+", t.get("depends", "")):
            if ref not in names:
                problems.append(f"{name}: depends on unknown task {ref}")
    return problems


def _prod_wave(harness: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    wf = render_argo.render(harness.write(fleet_doc(CLUSTERS, WAVES)))[0]
    templates = {t["name"]: t for t in wf["spec"]["templates"]}
    wave = templates["wave-prod"]
    return wave, {t["name"]: t for t in wave["dag"]["tasks"]}["budget"]


def test_every_dag_passes_argos_own_validation_rules(harness: Harness) -> None:
    wf = render_argo.render(harness.write(fleet_doc(CLUSTERS, WAVES)))[0]
    dags = [t for t in wf["spec"]["templates"] if "dag" in t]
    assert [t["name"] for t in dags] == ["fleet", "wave-prod"]
    assert {t["name"]: _dag_problems(t) for t in dags} == {"fleet": [], "wave-prod": []}
    wave = dags[1]
    tasks = [t["name"] for t in wave["dag"]["tasks"]]
    assert tasks == ["cluster-1st", "cluster-eu-west-1", "cluster-budget", "cluster-c4", "budget"]
    # assessDAGPhase: leaves decide a DAG's phase; `budget` must be the only one, so a failed
    # cluster within the budget does not fail the wave and one over it does.
    referenced = set(re.findall(r"([a-zA-Z0-9][-a-zA-Z0-9]*?)\.[A-Z]", wave["dag"]["tasks"][-1]["depends"]))
    assert [n for n in tasks if n not in referenced] == ["budget"]


def test_the_old_wave_shape_breaks_argos_rules(harness: Harness) -> None:
    """Negative control: the round-1 shape (bare cluster names, continueOn beside depends)."""
    wave, budget = _prod_wave(harness)
    old = {"name": "wave-prod", "dag": {"tasks": [
        *({"name": t["name"].removeprefix("cluster-"), "template": t["template"], "continueOn": {"failed": True}}
          for t in wave["dag"]["tasks"][:-1]),
        {**budget, "depends": "(1st.Succeeded || 1st.Failed) && (budget.Succeeded || budget.Failed)"}]}}
    problems = _dag_problems(old)
    assert "duplicate task budget" in problems
    assert "1st: name cannot begin with a digit when using 'depends' or 'dependencies'" in problems
    assert sum("cannot use 'continueOn' when using 'depends'" in p for p in problems) == 4


@needs_expr
def test_budget_expression_counts_failed_and_errored_clusters_in_expr(harness: Harness) -> None:
    _, budget = _prod_wave(harness)
    tag = {p["name"]: p["value"] for p in budget["arguments"]["parameters"]}["failed"]
    assert tag.startswith("{{=") and tag.endswith("}}")
    src = tag[3:-2]
    tasks = [render_argo.task_name(c) for c in CLUSTERS]
    # Each cluster once, by the indexed form docs/variables.md gives for hyphenated names.
    assert re.findall(r"tasks\['([^']+)'\]\.status", src) == tasks
    assert "tasks." not in src
    outcomes = list(itertools.product(PHASES, repeat=len(tasks)))
    cases = []
    for phases in outcomes:
        flat = {}
        for t, phase in zip(tasks, phases, strict=True):
            flat |= {f"tasks.{t}.status": phase, f"tasks.{t}.id": f"fleet-x-{t}"}
            if phase != "Error":  # an errored pod may have no exit code
                flat[f"tasks.{t}.exitCode"] = "0" if phase == "Succeeded" else "1"
        cases.append((src, _argo_env(flat)))
    got = [r.get("value", r.get("error")) for r in _expr(cases)]
    assert got == [sum(p != "Succeeded" for p in phases) for phases in outcomes]


@needs_expr
def test_the_old_expressions_miscount_in_expr() -> None:
    """Negative controls: an errored cluster was not counted; the dotted form does not parse as a name."""
    env = _argo_env({"tasks.cluster-c1.status": "Error", "tasks.cluster-c2.status": "Failed"})
    old = "(tasks['cluster-c1'].status == 'Failed' ? 1 : 0) + (tasks['cluster-c2'].status == 'Failed' ? 1 : 0)"
    new = render_argo.budget_expression(["cluster-c1", "cluster-c2"])[3:-2]
    dotted = "tasks.cluster-c1.status"
    got = _expr([(old, env), (new, env), (dotted, env)])
    assert got[0] == {"value": 1} and got[1] == {"value": 2}
    assert "error" in got[2]


@needs_expr
def test_budget_depends_holds_however_the_clusters_ended(harness: Harness) -> None:
    _, budget = _prod_wave(harness)
    tasks = [render_argo.task_name(c) for c in CLUSTERS]
    logic = budget["depends"]
    evaluated = logic.replace("-", "_")  # dag.go evaluateDependsLogic does this to every name
    ended = list(itertools.product(PHASES, repeat=len(tasks)))
    cases = [(evaluated, {t.replace("-", "_"): _task_results(p) for t, p in zip(tasks, phases, strict=True)})
             for phases in ended]
    # The round-1 clause, for the same outcomes: an Errored cluster left `budget` Omitted.
    old = " && ".join(f"({t}.Succeeded || {t}.Failed)" for t in tasks).replace("-", "_")
    cases += [(old, env) for _, env in cases]
    got = [r.get("value", r.get("error")) for r in _expr(cases)]
    assert got[:len(ended)] == [True] * len(ended)
    assert got[len(ended):] == ["Error" not in phases for phases in ended]


@pytest.mark.skipif(shutil.which("test") is None, reason="no coreutils `test`")
def test_budget_container_fails_the_wave_only_over_budget(harness: Harness) -> None:
    """The budget template's container, with Argo's substitution of its input parameters."""
    wf = render_argo.render(harness.write(fleet_doc(CLUSTERS, WAVES)))[0]
    container = {t["name"]: t for t in wf["spec"]["templates"]}["budget"]["container"]
    for failed in range(len(CLUSTERS) + 1):
        params = {"inputs.parameters.failed": str(failed), "inputs.parameters.budget": "1"}
        argv = [container["command"][0], *(params.get(a.strip("{}"), a) for a in container["args"])]
        assert subprocess.run(argv, check=False).returncode == (0 if failed <= 1 else 1), argv
