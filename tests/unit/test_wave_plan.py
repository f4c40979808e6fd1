"""The canary's wave plan: growing waves, equal waves, the operator's order (meshops.domain.waves)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from meshops.cli.main import main
from meshops.domain.waves import NamespaceFacts, WaveError, WaveShape, plan_waves


def fleet(count: int, **overrides: dict) -> list[NamespaceFacts]:
    """``count`` namespaces of 10 workloads each; ``overrides`` by name replace fields of one."""
    out = []
    for i in range(count):
        name = f"ns-{i:03d}"
        out.append(NamespaceFacts(name=name, **{"workloads": 10, "pods": 10, **overrides.get(name, {})}))
    return out


def sizes(facts: list[NamespaceFacts], first: tuple[str, ...] = (), **shape: object) -> list[int]:
    return [len(w.namespaces) for w in plan_waves(facts, first=first, shape=WaveShape(**shape))]  # type: ignore[arg-type]


def names(facts: list[NamespaceFacts], first: tuple[str, ...] = (), **shape: object) -> list[list[str]]:
    return [w.namespaces for w in plan_waves(facts, first=first, shape=WaveShape(**shape))]  # type: ignore[arg-type]


def test_default_waves_double_from_one_namespace() -> None:
    """200 namespaces: 1, 2, 4, ... 64, then the last 73; each wave says why it is that big."""
    waves = plan_waves(fleet(200), shape=WaveShape())
    assert [len(w.namespaces) for w in waves] == [1, 2, 4, 8, 16, 32, 64, 73]
    assert waves[0].reason == "the first namespace in order, alone"
    assert waves[3].reason == "2 x 4 = 8"
    assert waves[-1].reason == "2 x 64 = 128: the last 73 namespaces"
    assert waves[1].why["ns-001"] == "#2 in order (size: 10 workloads, 10 pods)"


def test_first_namespaces_are_wave_zero_and_the_base_of_growth() -> None:
    """--first namespaces move alone (canary), in the order given; the next wave is growth x their count."""
    waves = plan_waves(fleet(20), first=("ns-010", "ns-003"), shape=WaveShape(growth=3))
    assert waves[0].canary and waves[0].namespaces == ["ns-010", "ns-003"] and waves[0].why["ns-010"] == "--first"
    assert [len(w.namespaces) for w in waves] == [2, 6, 12]
    assert not any(w.canary for w in waves[1:])


@pytest.mark.parametrize(("shape", "expected"), [
    ({"growth": 1.5}, [1, 2, 3, 5, 8, 12, 18, 27, 41, 62, 21]),
    ({"growth": 1}, [1] * 10),
    ({"max_wave_size": 50}, [1, 2, 4, 8, 16, 32, 50, 50, 37]),
    ({"wave_size": 40}, [40, 40, 40, 40, 40]),
])
def test_growth_cap_and_equal_waves(shape: dict, expected: list[int]) -> None:
    """Fractional growth rounds up, growth 1 keeps the first size, the cap holds, --wave-size keeps waves equal."""
    count = sum(expected)
    assert sizes(fleet(count), **shape) == expected


def test_capped_wave_says_so() -> None:
    waves = plan_waves(fleet(40), shape=WaveShape(max_wave_size=10))
    assert waves[4].reason == "2 x 8 = 16, capped at 10 (max wave size)"


def test_orders() -> None:
    """size: fewest workloads then pods; risk: no StatefulSet, then fewest pods; name; ties by name.
    Namespaces with nothing to restart go last whatever the order."""
    facts = [NamespaceFacts(name="a-big", workloads=9, pods=9),
             NamespaceFacts(name="b-stateful", workloads=1, pods=2, statefulsets=1),
             NamespaceFacts(name="c-small", workloads=2, pods=5),
             NamespaceFacts(name="d-empty", workloads=0, pods=0),
             NamespaceFacts(name="e-tiny", workloads=2, pods=3)]
    flat = {o: [ns for w in names(facts, order=o) for ns in w] for o in ("size", "risk", "name")}
    assert flat["size"] == ["b-stateful", "e-tiny", "c-small", "a-big", "d-empty"]
    assert flat["risk"] == ["e-tiny", "c-small", "a-big", "b-stateful", "d-empty"]
    assert flat["name"] == ["a-big", "b-stateful", "c-small", "e-tiny", "d-empty"]
    why = plan_waves(facts, shape=WaveShape(order="risk"))[-1].why
    assert why["d-empty"].endswith("(nothing to restart: after the namespaces with workloads)")


def test_wave_marks_pin_namespaces_to_a_wave() -> None:
    """meshops.dev/wave: N puts a namespace in wave N, the order fills the rest of the wave; a wave
    numbered past the end of the plan runs last; an annotation works like a label."""
    facts = fleet(10, **{"ns-009": {"labels": {"meshops.dev/wave": "0"}},
                         "ns-008": {"annotations": {"meshops.dev/wave": "2"}},
                         "ns-007": {"labels": {"meshops.dev/wave": "2"}},
                         "ns-000": {"labels": {"meshops.dev/wave": "30"}}})
    waves = plan_waves(facts, shape=WaveShape())
    assert [w.namespaces for w in waves] == [
        ["ns-009"], ["ns-001", "ns-002"], ["ns-007", "ns-008", "ns-003", "ns-004"], ["ns-005", "ns-006"],
        ["ns-000"]]
    assert waves[0].reason == "1 namespace placed by meshops.dev/wave=0"
    assert waves[2].reason == "2 x 2 = 4: 2 namespaces placed by meshops.dev/wave=2, 2 next in order"
    assert waves[2].why["ns-008"] == "annotation meshops.dev/wave=2"
    assert waves[4].why["ns-000"] == "label meshops.dev/wave=30 (moves as wave 4: the plan ends sooner)"


def test_order_marks_rank_before_unmarked_namespaces() -> None:
    """meshops.dev/order ranks marked namespaces first, lowest first (negative via an annotation);
    a label and an annotation that agree are fine."""
    facts = fleet(6, **{"ns-005": {"annotations": {"meshops.dev/order": "-3"}},
                        "ns-002": {"labels": {"meshops.dev/order": "7"}, "annotations": {"meshops.dev/order": "7"}},
                        "ns-004": {"labels": {"meshops.dev/order": "2"}}})
    waves = plan_waves(facts, shape=WaveShape(order="name"))
    assert [ns for w in waves for ns in w.namespaces] == ["ns-005", "ns-004", "ns-002", "ns-000", "ns-001", "ns-003"]
    assert waves[1].why["ns-004"] == "#2 in order (label meshops.dev/order=2, by name)"


@pytest.mark.parametrize(("facts", "first", "shape", "message"), [
    (fleet(3, **{"ns-001": {"labels": {"meshops.dev/wave": "two"}}}), (), {},
     "namespace ns-001: label meshops.dev/wave='two' is not a whole number"),
    (fleet(3, **{"ns-001": {"annotations": {"meshops.dev/order": "1.5"}}}), (), {},
     "annotation meshops.dev/order='1.5' is not a whole number"),
    (fleet(3, **{"ns-001": {"annotations": {"meshops.dev/wave": "-2"}}}), (), {}, "is negative"),
    (fleet(3, **{"ns-001": {"labels": {"meshops.dev/wave": "1"}, "annotations": {"meshops.dev/wave": "2"}}}), (), {},
     "disagree"),
    (fleet(3, **{"ns-001": {"labels": {"meshops.dev/wave": "0"}}}), ("ns-002",), {}, "--first takes wave 0"),
    (fleet(5, **{f"ns-00{i}": {"labels": {"meshops.dev/wave": "1"}} for i in range(3)}), (), {"max_wave_size": 2},
     "wave 1: 3 namespaces labelled meshops.dev/wave=1, more than the max wave size 2"),
    (fleet(3), (), {"growth": 0.5}, "growth 0.5"),
    (fleet(3), (), {"growth": float("nan")}, "growth nan"),
    (fleet(3), (), {"order": "random"}, "unknown order 'random'"),
    (fleet(3), (), {"wave_size": 2, "max_wave_size": 4}, "give one of them"),
    (fleet(3), (), {"max_wave_size": -1}, "max wave size -1"),
])
def test_bad_marks_and_shapes_are_refused(facts: list[NamespaceFacts], first: tuple[str, ...], shape: dict,
                                          message: str) -> None:
    with pytest.raises(WaveError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        plan_waves(facts, first=first, shape=WaveShape(**shape))


def test_every_namespace_is_planned_once_in_a_growing_plan() -> None:
    """Random fleets, marks and shapes: each namespace in exactly one wave, no wave empty, no wave
    over the cap unless the operator pinned it, sizes never shrinking before the last wave."""
    rng = random.Random(18)
    for _ in range(300):
        count = rng.randint(1, 60)
        overrides: dict[str, dict] = {}
        for i in rng.sample(range(count), k=rng.randint(0, min(count, 5))):
            overrides[f"ns-{i:03d}"] = {"labels": {"meshops.dev/order": str(rng.randint(0, 3))}}
        facts = [NamespaceFacts(name=f.name, workloads=rng.randint(0, 5), pods=rng.randint(0, 9),
                                statefulsets=rng.randint(0, 1), labels=f.labels) for f in fleet(count, **overrides)]
        cap = rng.choice([0, 0, 3, 7])
        waves = plan_waves(facts, shape=WaveShape(growth=rng.choice([1, 1.5, 2, 3]), max_wave_size=cap,
                                                  order=rng.choice(["size", "name", "risk"])))
        flat = [ns for w in waves for ns in w.namespaces]
        assert sorted(flat) == sorted(f.name for f in facts) and len(flat) == len(set(flat))
        lengths = [len(w.namespaces) for w in waves]
        assert all(lengths) and (not cap or max(lengths) <= cap)
        assert lengths[:-1] == sorted(lengths[:-1])
        assert all(set(w.why) == set(w.namespaces) for w in waves)


@pytest.mark.parametrize(("args", "message"), [
    (("--growth", "0.5"), "--growth"),
    (("--growth", "nan"), "--growth nan"),
    (("--max-wave-size", "0"), "--max-wave-size"),
    (("--order", "random"), "--order"),
    (("--wave-size", "5", "--max-wave-size", "9"), "--wave-size keeps equal waves; --max-wave-size"),
])
def test_bad_wave_options_exit_2_before_touching_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           args: tuple[str, ...], message: str) -> None:
    """Refused before any cluster is reached (the kubeconfig does not even exist)."""
    with pytest.raises(SystemExit) as exc:
        main(["--kubeconfig", str(tmp_path / "none"), "--state-dir", str(tmp_path), "upgrade", "--to", "1.25.2",
              *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_wave_sizes_read_short_on_the_command_line() -> None:
    from meshops.cli.upgrade_cmds import _sizes_text

    assert _sizes_text([1, 2, 4, 8, 16, 32, 64, 73]) == "1, 2, 4, 8, 16, 32, 64, 73"
    assert _sizes_text([10] * 20) == "10 (x20)" and _sizes_text([1, 1, 3, 3, 3]) == "1, 1, 3 (x3)"
