"""The quick validation path (no pydantic, no Jinja) only ever accepts what the full validation accepts.

It answers "certainly valid" (a step count) or "not sure" (None, and the full validation
decides). These tests hold it to that: against the repository's playbooks, the malformed
corpus, thousands of random mutations of valid playbooks, and a stale step catalog.
"""

from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import PlaybookInvalid
from meshops.engine import quickcheck
from meshops.engine.playbook import ParamSpec, Playbook, Retries, StepSpec, validate_document
from meshops.engine.yamlsource import SourceDoc, load_yaml_file
from meshops.steps import inputs_catalog

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yaml"))
BAD = sorted((ROOT / "tests" / "data" / "bad_playbooks").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _builtin_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/conftest.py adds test step types, which (rightly) turn the quick path off."""
    monkeypatch.delenv("MESHOPS_STEP_MODULES", raising=False)


def full(data: Any) -> int | None:
    """The full validation's answer: the step count, or None when it finds a problem."""
    try:
        return len(validate_document(SourceDoc(path="p.yaml", text="", data=data)).steps)
    except PlaybookInvalid:
        return None


def quick(data: Any) -> int | None:
    return quickcheck.steps_if_valid(data)


def test_the_step_catalog_is_what_the_step_models_say() -> None:
    """The checked-in description is regenerated from the live models: it cannot drift unnoticed.
    (If this fails: python -m meshops.steps.inputs_catalog)"""
    assert (ROOT / "meshops" / "steps" / "_catalog_data.py").read_text() == inputs_catalog.render()


def test_the_rules_restated_match_the_models() -> None:
    assert set(quickcheck.TOP_KEYS) == {f.alias or n for n, f in Playbook.model_fields.items()}
    assert set(quickcheck.STEP_KEYS) == {f.alias or n for n, f in StepSpec.model_fields.items()}
    assert set(quickcheck.PARAM_KEYS) == set(ParamSpec.model_fields)
    assert set(quickcheck.RETRIES) == set(Retries.model_fields)


def test_a_stale_catalog_is_detected_and_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edit a step module without regenerating: the hash differs, the quick path steps aside."""
    hello = load_yaml_file(ROOT / "playbooks" / "hello.yaml")
    assert quickcheck.steps_if_valid(hello.data) == 5
    copy_dir = tmp_path / "steps"
    shutil.copytree(ROOT / "meshops" / "steps", copy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(inputs_catalog, "_HERE", copy_dir)
    assert inputs_catalog.load() is not None  # an unchanged copy is fresh
    core = copy_dir / "core.py"
    core.write_text(core.read_text().replace("min_length=1", "min_length=2"))
    assert inputs_catalog.load() is None
    assert quickcheck.steps_if_valid(hello.data) is None
    (copy_dir / "extra_steps.py").write_text("")  # a new module may define step types too
    core.write_text(core.read_text().replace("min_length=2", "min_length=1"))
    assert inputs_catalog.load() is None


def test_extra_step_modules_send_validation_to_the_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHOPS_STEP_MODULES", "tests.some_steps")
    assert quickcheck.steps_if_valid(load_yaml_file(ROOT / "playbooks" / "hello.yaml").data) is None


@pytest.mark.parametrize("path", PLAYBOOKS, ids=[p.stem for p in PLAYBOOKS])
def test_repository_playbooks_agree(path: Path) -> None:
    doc = load_yaml_file(path)
    answer = quickcheck.steps_if_valid(doc.data)
    assert answer is None or answer == len(validate_document(doc).steps)


def test_the_quick_path_covers_the_simple_playbooks() -> None:
    """Not vacuous: the sample and the plain playbooks are proved valid without pydantic."""
    for name in ("hello", "status", "tune-apply"):
        assert quickcheck.steps_if_valid(load_yaml_file(ROOT / "playbooks" / f"{name}.yaml").data) is not None, name


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_malformed_playbooks_are_never_accepted(path: Path) -> None:
    try:
        doc = load_yaml_file(path)
    except PlaybookInvalid:
        return
    assert quickcheck.steps_if_valid(doc.data) is None


RICH = {
    "apiVersion": "meshops.dev/v1", "kind": "Playbook", "on_failure": "freeze",
    "metadata": {"name": "rich", "description": "many fields", "lock": False},
    "params": {
        "greeting": {"type": "string", "default": "hi", "pattern": "h.*", "enum": ["hi", "ho"]},
        "count": {"type": "integer", "default": 3, "minimum": 1, "maximum": 10},
        "soak": {"type": "duration", "default": "5s", "minimum": "1s", "maximum": "1h"},
        "flag": {"type": "boolean", "default": "yes", "required": False, "secret": True},
        "items": {"type": "list", "default": [1, 2], "min_items": 1, "max_items": 5},
        "ratio": {"type": "number", "description": "r", "default": 0.5},
    },
    "steps": [
        {"id": "first", "uses": "core.noop", "name": "first one", "with": {"note": "n", "values": {"a": 1}}},
        {"id": "say", "uses": "core.log", "retries": {"count": 2, "backoff": 5, "jitter": 0.5},
         "timeout": "30s", "when": True, "with": {"message": "{{ params.greeting }} {{ steps.first.outputs['values'] }}",
                                                 "level": "warning"}},
        {"id": "each", "uses": "core.log", "foreach": "{{ params.items }}", "concurrency": "{{ params.count }}",
         "on_failure": "continue", "with": {"message": "{{ item | string }} of {{ steps['first'].outputs.values[0] }}"}},
        {"id": "wait", "uses": "core.wait", "timeout": 60, "retries": 3, "with": {"duration": "1m30s"}},
        {"id": "ask", "uses": "gate.approve", "on_failure": "{{ params.greeting }}",
         "with": {"timeout": "1h", "wait": "0s", "on_timeout": "continue", "message": "ok?"}},
        {"id": "stop", "uses": "core.fail", "when": False, "with": {"message": "x", "temporary": True}},
    ],
}

# Values a mutation puts in place of another: wrong types, edge numbers, odd text and templates.
REPLACEMENTS: list[Any] = [
    None, True, False, 0, 1, -1, 101, 1000, 1001, 2**60, 0.0, 0.5, 1.5, -0.5, float("inf"), float("nan"), "", " ",
    "x", "X", "1", "0s", "-1s", "5m", "32d", "1h30m", "abc", "Bad Id", "a" * 70, "a\n", "info", "debug", "error\n",
    "rollback", "freeze", "continue", "fail", "meshops.dev/v2", "Playbook", "core.log", "core.nope", "_x", "{{",
    "{{ params.greeting }}", "{{ params.nope }}", "{{ steps.first.outputs }}", "{{ steps.say.outputs }}",
    "{{ steps.later.outputs }}", "{{ params.greeting | upper }}", "{{ params._x }}", "{{ params['greeting'] }}",
    "{{ params.count + 1 }}", "{% if x %}y{% endif %}", "{{ not }}", "{{ steps.first.outputs[01] }}",
    "{{ params.greeting }}}}", "{{params.greeting}}", "{{ - x }}", "h", "hx", "[a-z", "string", "integer", "object",
    [], [1], ["a"], [{"a": 1}], {}, {"a": 1}, {"count": 2}, {"count": 200}, {"nope": 1}, {1: "a"},
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice([1, 1, 2])):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = rng.random()
        if action < 0.65:
            parent[last] = copy.deepcopy(rng.choice(REPLACEMENTS))
        elif action < 0.8 and isinstance(parent, dict):
            del parent[last]
        elif action < 0.9 and isinstance(parent, dict):
            parent[rng.choice(["extra", "with_", "api_version", "level", "with", "name", 5])] = \
                copy.deepcopy(rng.choice(REPLACEMENTS))
        elif isinstance(parent, list):
            parent.insert(rng.randrange(len(parent) + 1), copy.deepcopy(parent[last]))
        elif isinstance(parent[last], str):
            text = parent[last]
            cut = rng.randrange(len(text) + 1)
            parent[last] = text[:cut] + rng.choice(["{{", "}}", " ", "_", ".", "'", "|", "x"]) + text[cut:]
    return doc


def test_random_mutations_never_make_the_quick_path_accept_what_the_full_one_refuses() -> None:
    """Quick "valid" implies full "valid" (same step count), over 1,200 mutated playbooks (a seeded
    run of 20,000 found no disagreement either)."""
    rng = random.Random(1717)
    plain = [load_yaml_file(ROOT / "playbooks" / f"{n}.yaml").data for n in ("hello", "status", "tune-apply")]
    seeds = [RICH, RICH, *plain, *(load_yaml_file(p).data for p in PLAYBOOKS)]
    agreed = 0
    for i in range(1200):
        doc = _mutate(seeds[i % len(seeds)], rng)
        answer = quick(doc)
        if answer is not None:
            assert full(doc) == answer, doc
            agreed += 1
    assert full(RICH) == quick(RICH) == len(RICH["steps"])
    assert agreed > 100  # the mutations still leave many the quick path can judge


def test_validating_the_sample_imports_neither_pydantic_nor_jinja_nor_any_step() -> None:
    """What keeps `meshops playbook validate` near the interpreter's own start-up (bench/startup.py)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MESHOPS_STEP_MODULES"}
    probe = ("import sys\nfrom meshops.cli.main import main\ntry:\n    main(['playbook', 'validate', "
             "'playbooks/hello.yaml'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'jinja2', 'structlog', 'rich', 'yaml')"
             " or m.startswith('meshops.steps.') and m not in ('meshops.steps.inputs_catalog', "
             "'meshops.steps._catalog_data')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.splitlines() == ["playbooks/hello.yaml: ok (5 steps)", "[]"]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_validate_words_every_problem_as_before_with_the_quick_path_on(path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """With only built-in steps (the quick path on), `playbook validate` still names the exact location."""
    from meshops.cli.main import main
    from tests.unit.test_bad_playbooks import expected

    where, message = expected(path)
    with pytest.raises(SystemExit) as exc:
        main(["playbook", "validate", str(path)])
    assert exc.value.code == 2
    assert f"{path}:{where}: {message}" in capsys.readouterr().err


def test_a_repeated_key_is_left_to_the_full_loader_which_refuses_it(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys; the quick path must not accept what the full refuses."""
    text = (ROOT / "playbooks" / "hello.yaml").read_text()
    path = tmp_path / "dup.yaml"
    path.write_text(text.replace("metadata:", "metadata: {name: x}\nmetadata:", 1))
    from meshops.engine import miniyaml

    assert miniyaml.load(path.read_text()) is None
    with pytest.raises(PlaybookInvalid, match="duplicate key"):
        quickcheck.step_count(str(path))
