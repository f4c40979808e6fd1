"""miniyaml reads plain block YAML exactly as PyYAML (through yamlsource) does, or declines.

Declining is always safe (the caller falls back to PyYAML); a wrong answer never is. So every
answer it gives is compared with the full loader's, typed (True is not 1), on the repository's
YAML and on random mutations of it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import PlaybookInvalid
from meshops.engine import miniyaml
from meshops.engine.yamlsource import load_yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted({*ROOT.glob("playbooks/*.yaml"), *ROOT.glob("profiles/*.yaml"), *ROOT.glob("tests/data/**/*.yaml"),
                *ROOT.glob("docs/**/*.yaml")})


def same(a: Any, b: Any) -> bool:
    """Equal with equal types all the way down (1 == True == 1.0 does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def full(text: str) -> tuple[bool, Any]:
    try:
        return True, load_yaml(text, path="x.yaml").data
    except PlaybookInvalid:
        return False, None


def agrees(text: str) -> bool:
    mine = miniyaml.load(text)
    if mine is None:
        return True
    ok, theirs = full(text)
    return ok and same(mine, theirs)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_repository_yaml_is_read_as_pyyaml_reads_it_or_declined(path: Path) -> None:
    assert agrees(path.read_text())


def test_plain_playbooks_are_read() -> None:
    for name in ("hello", "status", "tune-apply", "tune"):
        assert miniyaml.load((ROOT / "playbooks" / f"{name}.yaml").read_text()) is not None, name


CASES = [
    ("a: 1\nb: -2\nc: 0\n", {"a": 1, "b": -2, "c": 0}),
    ("a: yes\nb: Off\nc: ~\nd:\ne: null\nf: y\n", {"a": True, "b": False, "c": None, "d": None, "e": None, "f": "y"}),
    ("a: 0.2s\nb: 1h30m\nc: 100ms\nd: 7d\n", {"a": "0.2s", "b": "1h30m", "c": "100ms", "d": "7d"}),
    ("a: \"x: y # z\"  # c\nb: 'it'\nc: x#y\nd: it's [odd], {ok}\n",
     {"a": "x: y # z", "b": "it", "c": "x#y", "d": "it's [odd], {ok}"}),
    ("s:\n- a\n- [b, 1, true]\n- k: v\n  j: []\n- {}\n", {"s": ["a", ["b", 1, True], {"k": "v", "j": []}, {}]}),
    ("m:\n  n:\n    - x\n    -  y\n  o: http://h:1/p\n", {"m": {"n": ["x", "y"], "o": "http://h:1/p"}}),
    ("r: {count: 2, backoff: 5}\ne: { }\nf: {a: x y, b: true}\n",
     {"r": {"count": 2, "backoff": 5}, "e": {}, "f": {"a": "x y", "b": True}}),
    ("d: >\n  one: #1\n  two\n\ne: |\n    a\n    b\n", {"d": "one: #1 two\n", "e": "a\nb\n"}),
]
DECLINED = ["a: 1.5\n", "a: 010\n", "a: 1_000\n", "a: 12:30\n", "a: .inf\n", "a: 2024-01-01\n", "a: &x 1\nb: *x\n",
            "a: !!str 1\n", "a: |\n  x", "a: b\n  c\n", "a: 'x''y'\n", "a: \"x\\ty\"\n", "on: 1\n",
            "a: 1\na: 2\n", "a:\n\t- x\n", "a: é\n", "- a\n", "a: {b: [1]}\n", "a: {b: 1, b: 2}\n", "a: {b: c: d}\n", "a: {1: b}\n", "a: {b}\n", "a: {b : 1}\n", "a: {b: 1} x\n", "a: [b, [c]]\n", "? a\n: b\n",
            "a: 1\n---\nb: 2\n", "a: >\n  x\n\n  y\n", "a: >\n  x\n  # y\n", "a: >\n  x\n    y\n",
            "a: >-\n  x\n", "a: >\n  x \n", "a: >\nb: 1\n", "a: |\n  x\n  #\nb: 1\n", "%YAML 1.1\n---\na: 1\n", "a: b: c\n", "a: 0x1f\n", "a: 1e3\n", "a: +1\n",
            "a:\n  b: 1\n c: 2\n", "\"a\": 1\n", "a: [x,]\n", "a: -x\n", "<<: {a: 1}\n"]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_the_forms_it_reads(text: str, expected: Any) -> None:
    assert same(miniyaml.load(text), expected)
    assert agrees(text)


@pytest.mark.parametrize("text", DECLINED)
def test_the_forms_it_declines(text: str) -> None:
    assert miniyaml.load(text) is None


NOISE = [">", "|", "  #", ">\n", "|\n  ", " ", "  ", ":", ": ", "-", "- ", "#", " #", "'", "\"", "[", "]", "{", "}", ",", "0", "1", ".", "y", "s",
         "yes", "on", "null", "~", "&a", "*a", "!", "|", ">", "?", "%", "@", "`", "\\", "\t", "\n", "x: ", "- x",
         "ms", "0x", "_", "é"]


def mutate(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for _ in range(rng.choice([1, 1, 2, 3])):
        i = rng.randrange(len(lines))
        action = rng.random()
        if action < 0.5:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:at] + rng.choice(NOISE) + lines[i][at:]
        elif action < 0.65 and lines[i]:
            at = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:at] + lines[i][at + 1:]
        elif action < 0.75:
            lines[i] = " " + lines[i]
        elif action < 0.85:
            lines[i] = lines[i][1:] if lines[i].startswith(" ") else lines[i]
        elif action < 0.93:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:
            del lines[i]
    return "\n".join(lines)


def test_mutations_are_read_as_pyyaml_reads_them_or_declined() -> None:
    rng = random.Random(17)
    seeds = [(ROOT / "playbooks" / f"{n}.yaml").read_text() for n in ("hello", "status", "tune-apply", "tune")]
    seeds += [text for text, _ in CASES]
    read = 0
    for i in range(1500):
        text = mutate(seeds[i % len(seeds)], rng)
        assert agrees(text), text
        read += miniyaml.load(text) is not None
    assert read > 300
