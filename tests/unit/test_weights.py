"""Weight schedules, batch building and the batch rules meshops enforces before sending."""

from __future__ import annotations

import pytest

from meshops.domain.errors import BadInput
from meshops.domain.weights import (
    AliasTarget,
    Change,
    ChangeBatch,
    InvalidBatch,
    RecordSet,
    apply_batch,
    fqdn,
    parse_steps,
    replace_batch,
    schedule,
    shift_batch,
    target_percent,
    validate_batch,
    weights_for,
)

NAME = "app.example.com."


def simple(value: str = "blue.elb.local", ttl: int = 60) -> RecordSet:
    return RecordSet(name=NAME, type="CNAME", ttl=ttl, values=(value,))


def weighted(set_id: str, weight: int | None, value: str, ttl: int = 60, hc: str | None = None) -> RecordSet:
    return RecordSet(name=NAME, type="CNAME", ttl=ttl, values=(value,), set_identifier=set_id, weight=weight,
                     health_check_id=hc)


BLUE = weighted("blue", 100, "blue.elb.local")
GREEN = weighted("green", 0, "green.elb.local")


def batch(*changes: tuple[str, RecordSet]) -> ChangeBatch:
    return ChangeBatch(changes=tuple(Change(action=a, record=r) for a, r in changes))  # type: ignore[arg-type]


def test_parse_steps_accepts_increasing_percentages() -> None:
    """'10,25,50,100' parses to integers; a trailing % is allowed."""
    assert parse_steps("10, 25,50%,100") == (10, 25, 50, 100)
    assert parse_steps([0, 100]) == (0, 100)


@pytest.mark.parametrize("text", ["", "10,110", "-5,50", "50,25", "10,10", "ten", "1.5", "10,,20"])
def test_parse_steps_refuses_bad_input(text: str) -> None:
    """Anything but strictly increasing whole percentages in 0-100 is BadInput (exit 2)."""
    with pytest.raises(BadInput):
        parse_steps(text)


def test_weights_always_sum_to_100_and_stay_in_range() -> None:
    """Every share gives integer weights in 0-255 that are never both zero."""
    for p in range(101):
        s, t = weights_for(p)
        assert isinstance(s, int) and isinstance(t, int)
        assert 0 <= s <= 255 and 0 <= t <= 255 and s + t == 100
        assert target_percent(s, t) == p


def test_schedule_skips_steps_already_reached() -> None:
    """From 75/25 only the steps beyond 25% remain; from 0/100 nothing remains."""
    assert [s.percent for s in schedule((10, 25, 50, 100), current=(75, 25))] == [50, 100]
    assert schedule((10, 25, 50, 100), current=(0, 100)) == []
    first = schedule((10,), current=(100, 0))[0]
    assert (first.source_weight, first.target_weight) == (90, 10)


def test_conversion_is_one_batch_of_delete_and_creates() -> None:
    """A simple record becomes a weighted pair in one batch: exact DELETE, then two CREATEs."""
    current = [simple()]
    b = replace_batch(current, [BLUE, GREEN])
    assert [c.action for c in b.changes] == ["DELETE", "CREATE", "CREATE"]
    after = validate_batch(b, current)
    assert set(after) == {BLUE, GREEN}


def test_restoring_records_of_the_same_key_upserts_them() -> None:
    """Back to a snapshot: keys that stay are UPSERTed, keys that go are DELETEd, unchanged ones untouched."""
    current = [BLUE.with_weight(0), GREEN.with_weight(100), weighted("red", 5, "red.lb")]
    b = replace_batch(current, [BLUE, GREEN])
    assert [(c.action, c.record.set_identifier) for c in b.changes] == [
        ("DELETE", "red"), ("UPSERT", "blue"), ("UPSERT", "green")]
    assert set(validate_batch(b, current)) == {BLUE, GREEN}
    assert replace_batch([BLUE, GREEN], [BLUE, GREEN]).changes == ()


def test_creating_weighted_beside_simple_is_refused() -> None:
    """A name is never both simple and weighted (the CREATE without the DELETE)."""
    with pytest.raises(InvalidBatch, match="both simple and weighted"):
        validate_batch(batch(("CREATE", GREEN)), [simple()])


def test_delete_must_match_exactly() -> None:
    """A DELETE that differs in TTL (or weight, or value) from the record is refused."""
    with pytest.raises(InvalidBatch, match="does not match"):
        validate_batch(batch(("DELETE", simple(ttl=300)), ("CREATE", BLUE), ("CREATE", GREEN)), [simple()])
    with pytest.raises(InvalidBatch, match="does not match"):
        validate_batch(batch(("DELETE", BLUE.with_weight(90)), ("CREATE", simple())), [BLUE])


@pytest.mark.parametrize("weight", [256, -1, 2.5, True])
def test_weight_outside_range_or_not_integer_is_refused(weight: object) -> None:
    """Weights are integers 0-255."""
    with pytest.raises(InvalidBatch, match="weight"):
        validate_batch(batch(("UPSERT", BLUE.with_weight(weight))), [BLUE, GREEN])  # type: ignore[arg-type]


def test_all_zero_weights_are_refused() -> None:
    """Setting every weight of the group to 0 is refused: Route53 would split evenly."""
    with pytest.raises(InvalidBatch, match="every weight would be 0"):
        validate_batch(shift_batch((BLUE, GREEN), (0, 0)), [BLUE, GREEN])


def test_shift_batch_changes_both_weights_in_one_batch() -> None:
    """A shift is exactly two UPSERTs of the pair, everything but the weight kept."""
    b = shift_batch((BLUE, GREEN), (75, 25))
    assert [(c.action, c.record.set_identifier, c.record.weight) for c in b.changes] == [
        ("UPSERT", "blue", 75), ("UPSERT", "green", 25)]
    after = {r.set_identifier: r for r in validate_batch(b, [BLUE, GREEN])}
    assert after["green"].values == GREEN.values and after["blue"].ttl == BLUE.ttl


def test_weighted_record_holds_one_value_and_cname_is_alone() -> None:
    """Weighted non-alias records hold one value; a CNAME shares its name with nothing."""
    two = RecordSet(name=NAME, type="A", ttl=60, values=("10.0.0.1", "10.0.0.2"), set_identifier="x", weight=1)
    with pytest.raises(InvalidBatch, match="exactly one value"):
        validate_batch(batch(("CREATE", two)), [])
    a = RecordSet(name=NAME, type="A", ttl=60, values=("10.0.0.1",))
    with pytest.raises(InvalidBatch, match="CNAME cannot share"):
        validate_batch(batch(("CREATE", a)), [simple()])


def test_weight_and_set_identifier_go_together() -> None:
    """A SetIdentifier without Weight, or a Weight without SetIdentifier, is refused."""
    with pytest.raises(InvalidBatch, match="needs a Weight"):
        validate_batch(batch(("CREATE", weighted("blue", None, "b"))), [])
    with pytest.raises(InvalidBatch, match="needs a SetIdentifier"):
        validate_batch(batch(("CREATE", RecordSet(name=NAME, type="CNAME", ttl=60, values=("b",), weight=5))), [])


def test_duplicate_create_and_missing_delete_are_refused() -> None:
    """CREATE of an existing record and DELETE of a missing one both fail, and nothing applies."""
    with pytest.raises(InvalidBatch, match="it exists"):
        apply_batch([BLUE, GREEN], batch(("CREATE", BLUE)))
    with pytest.raises(InvalidBatch, match="no such record"):
        apply_batch([BLUE], batch(("UPSERT", GREEN), ("DELETE", weighted("red", 1, "r"))))


def test_request_size_limit_counts_upserts_twice() -> None:
    """More than 1,000 ResourceRecord elements (UPSERT x2) in one request is refused."""
    many = [RecordSet(name=f"h{i}.example.com.", type="A", ttl=60, values=("10.0.0.1",)) for i in range(501)]
    with pytest.raises(InvalidBatch, match="exceed 1000"):
        validate_batch(ChangeBatch(changes=tuple(Change(action="UPSERT", record=r) for r in many)), [])


def test_alias_records_round_trip_and_carry_no_ttl() -> None:
    """An alias record converts to and from the AWS shape; its effective TTL is the ELB's 60 s."""
    alias = RecordSet(name=NAME, type="A", alias=AliasTarget(hosted_zone_id="Z2P70J7EXAMPLE",
                                                            dns_name="dualstack.a.elb.us-east-1.amazonaws.com."),
                      set_identifier="blue", weight=10)
    assert RecordSet.from_aws(alias.to_aws()) == alias
    assert alias.effective_ttl == 60 and alias.target == "dualstack.a.elb.us-east-1.amazonaws.com"
    with pytest.raises(InvalidBatch, match="neither TTL"):
        validate_batch(batch(("CREATE", RecordSet(name=NAME, type="A", ttl=60, alias=alias.alias,
                                                  set_identifier="x", weight=1))), [])


def test_fqdn_normalises_case_and_trailing_dot() -> None:
    """Names compare lowercase and dot-terminated, as Route53 returns them."""
    assert fqdn("App.Example.COM") == "app.example.com."
    with pytest.raises(BadInput):
        fqdn(" ")
