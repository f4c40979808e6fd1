"""Route53 weighted records as values, weight schedules, and the rules every change batch keeps.

Route53 itself enforces only part of these rules and moto almost none (see
``shared/reference/route53-and-engines.md``), so meshops checks every batch here before
it is sent: ``validate_batch`` applies the batch to a snapshot of the records exactly as
Route53 would (DELETE must match a record exactly, CREATE must not collide, UPSERT
replaces by name + type + SetIdentifier) and then checks what results:

- a weight is an integer 0-255, present exactly when a SetIdentifier is;
- a name and type is never both simple and weighted, and a CNAME never shares its name;
- the weights of a group never sum to zero (Route53 would then split evenly, not stop);
- a weighted non-alias record holds exactly one value; at most 100 records per group;
- at most 1,000 ResourceRecord elements per request, an UPSERT counting twice.

A traffic shift is always one batch that changes both weights (``shift_batch``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from meshops.domain.errors import BadInput, MeshopsError

MAX_WEIGHT = 255
MAX_WEIGHTED_PER_GROUP = 100
MAX_RR_PER_REQUEST = 1000
MAX_TTL = 2_147_483_647
# The TTL Route53 uses for an alias to a load balancer (ELB's own TTL): alias records carry none.
ALIAS_TTL = 60

Action = Literal["CREATE", "DELETE", "UPSERT"]


class InvalidBatch(MeshopsError):
    """A change batch that breaks a Route53 rule or a meshops invariant; never sent."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid change batch: " + "; ".join(problems))


def fqdn(name: str) -> str:
    """``App.Example.com`` -> ``app.example.com.`` (Route53 answers names lowercase, dot-terminated)."""
    name = name.strip().lower()
    if not name or name == ".":
        raise BadInput("a DNS name cannot be empty")
    return name if name.endswith(".") else name + "."


@dataclass(frozen=True, kw_only=True)
class AliasTarget:
    hosted_zone_id: str
    dns_name: str
    evaluate_target_health: bool = False


@dataclass(frozen=True, kw_only=True)
class RecordSet:
    """One Route53 ResourceRecordSet. ``other_policy`` names a routing policy meshops does not drive."""

    name: str
    type: str
    ttl: int | None = None
    values: tuple[str, ...] = ()
    alias: AliasTarget | None = None
    set_identifier: str | None = None
    weight: int | None = None
    health_check_id: str | None = None
    other_policy: str | None = None

    @property
    def weighted(self) -> bool:
        return self.set_identifier is not None

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (fqdn(self.name), self.type.upper(), self.set_identifier)

    @property
    def effective_ttl(self) -> int:
        """How long resolvers may cache an answer: the TTL, or the ELB's 60 s for an alias."""
        return ALIAS_TTL if self.alias is not None else int(self.ttl or 0)

    @property
    def target(self) -> str:
        """Where it points: the alias DNS name or the single value (lowercase, no trailing dot)."""
        raw = self.alias.dns_name if self.alias is not None else (self.values[0] if self.values else "")
        return raw.lower().rstrip(".")

    def with_weight(self, weight: int) -> RecordSet:
        return replace(self, weight=weight)

    def rr_count(self) -> int:
        return max(1, len(self.values))

    def to_aws(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Name": fqdn(self.name), "Type": self.type.upper()}
        if self.set_identifier is not None:
            out["SetIdentifier"] = self.set_identifier
        if self.weight is not None:
            out["Weight"] = self.weight
        if self.alias is not None:
            out["AliasTarget"] = {"HostedZoneId": self.alias.hosted_zone_id, "DNSName": self.alias.dns_name,
                                  "EvaluateTargetHealth": self.alias.evaluate_target_health}
        else:
            if self.ttl is not None:
                out["TTL"] = self.ttl
            out["ResourceRecords"] = [{"Value": v} for v in self.values]
        if self.health_check_id is not None:
            out["HealthCheckId"] = self.health_check_id
        return out

    @classmethod
    def from_aws(cls, data: dict[str, Any]) -> RecordSet:
        alias = data.get("AliasTarget")
        policies = [k for k in ("Failover", "GeoLocation", "GeoProximityLocation", "Region", "MultiValueAnswer",
                                "CidrRoutingConfig") if data.get(k) not in (None, False)]
        weight = data.get("Weight")
        return cls(
            name=fqdn(str(data["Name"])), type=str(data["Type"]).upper(),
            ttl=int(data["TTL"]) if data.get("TTL") is not None else None,
            values=tuple(str(r["Value"]) for r in data.get("ResourceRecords") or []),
            alias=None if not alias else AliasTarget(hosted_zone_id=str(alias["HostedZoneId"]),
                                                     dns_name=str(alias["DNSName"]),
                                                     evaluate_target_health=bool(alias.get("EvaluateTargetHealth"))),
            set_identifier=data.get("SetIdentifier"),
            weight=weight,
            health_check_id=data.get("HealthCheckId"),
            other_policy=policies[0] if policies else None,
        )


@dataclass(frozen=True, kw_only=True)
class Change:
    action: Action
    record: RecordSet

    def to_aws(self) -> dict[str, Any]:
        return {"Action": self.action, "ResourceRecordSet": self.record.to_aws()}


@dataclass(frozen=True, kw_only=True)
class ChangeBatch:
    changes: tuple[Change, ...]
    comment: str = ""

    def to_aws(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Changes": [c.to_aws() for c in self.changes]}
        if self.comment:
            out["Comment"] = self.comment[:256]
        return out

    def rr_elements(self) -> int:
        return sum(c.record.rr_count() * (2 if c.action == "UPSERT" else 1) for c in self.changes)

    def describe(self) -> str:
        parts = []
        for c in self.changes:
            r = c.record
            ident = f"/{r.set_identifier}" if r.set_identifier else ""
            weight = f" w={r.weight}" if r.weight is not None else ""
            parts.append(f"{c.action} {r.name}{r.type}{ident}{weight} -> {r.target}")
        return "; ".join(parts)


# ---- rules ----------------------------------------------------------------------------------


def _record_problems(r: RecordSet) -> list[str]:
    where = f"{r.name} {r.type}" + (f" [{r.set_identifier}]" if r.set_identifier else "")
    out = []
    if r.other_policy is not None:
        out.append(f"{where}: routing policy {r.other_policy} is not driven by meshops")
    if r.weight is not None and (isinstance(r.weight, bool) or not isinstance(r.weight, int)):
        out.append(f"{where}: weight {r.weight!r} is not an integer")
    elif r.weight is not None and not 0 <= r.weight <= MAX_WEIGHT:
        out.append(f"{where}: weight {r.weight} is outside 0-{MAX_WEIGHT}")
    if r.set_identifier is not None and r.weight is None and r.other_policy is None:
        out.append(f"{where}: a SetIdentifier needs a Weight")
    if r.weight is not None and r.set_identifier is None:
        out.append(f"{where}: a Weight needs a SetIdentifier")
    if r.set_identifier is not None and not 1 <= len(r.set_identifier) <= 128:
        out.append(f"{where}: a SetIdentifier has 1-128 characters")
    if r.alias is not None:
        if r.values or r.ttl is not None:
            out.append(f"{where}: an alias record has neither TTL nor values")
    else:
        if r.ttl is None or not 0 <= r.ttl <= MAX_TTL:
            out.append(f"{where}: TTL {r.ttl!r} is missing or outside 0-{MAX_TTL}")
        if not r.values:
            out.append(f"{where}: a non-alias record needs at least one value")
        elif (r.weighted or r.type == "CNAME") and len(r.values) != 1:
            out.append(f"{where}: a {'weighted' if r.weighted else 'CNAME'} record holds exactly one value, "
                       f"not {len(r.values)}")
    return out


def apply_batch(current: Iterable[RecordSet], batch: ChangeBatch) -> list[RecordSet]:
    """The records after ``batch``, as Route53 computes them; raises InvalidBatch on any broken rule."""
    records: dict[tuple[str, str, str | None], RecordSet] = {r.key: r for r in current}
    problems: list[str] = []
    if not batch.changes:
        problems.append("a batch needs at least one change")
    if batch.rr_elements() > MAX_RR_PER_REQUEST:
        problems.append(f"{batch.rr_elements()} ResourceRecord elements (UPSERT counts twice) exceed "
                        f"{MAX_RR_PER_REQUEST}")
    touched: set[str] = set()
    for index, change in enumerate(batch.changes):
        r = change.record
        problems += [f"changes[{index}]: {p}" for p in _record_problems(r)]
        touched.add(fqdn(r.name))
        existing = records.get(r.key)
        if change.action == "DELETE":
            if existing is None:
                problems.append(f"changes[{index}]: DELETE of {r.name} {r.type} [{r.set_identifier}]: no such record")
            elif existing != r:
                problems.append(f"changes[{index}]: DELETE of {r.name} {r.type} [{r.set_identifier}] does not match "
                                "the record exactly (weight, TTL, values, alias and health check must all match)")
            else:
                del records[r.key]
        elif change.action == "CREATE":
            if existing is not None:
                problems.append(f"changes[{index}]: CREATE of {r.name} {r.type} [{r.set_identifier}]: it exists")
            else:
                records[r.key] = r
        elif change.action == "UPSERT":
            records[r.key] = r
        else:
            problems.append(f"changes[{index}]: unknown action {change.action!r}")
    after = list(records.values())
    problems += group_problems(after, names=touched)
    if problems:
        raise InvalidBatch(problems)
    return after


def group_problems(records: Sequence[RecordSet], *, names: Iterable[str] | None = None) -> list[str]:
    """Rules across records: simple vs weighted, CNAME exclusivity, all-zero weights, group size."""
    wanted = None if names is None else {fqdn(n) for n in names}
    groups: dict[tuple[str, str], list[RecordSet]] = {}
    for r in records:
        if wanted is None or fqdn(r.name) in wanted:
            groups.setdefault((fqdn(r.name), r.type.upper()), []).append(r)
    out = []
    types_at: dict[str, set[str]] = {}
    for (name, rtype), members in sorted(groups.items()):
        types_at.setdefault(name, set()).add(rtype)
        simple = [m for m in members if not m.weighted]
        weighted = [m for m in members if m.weighted and m.other_policy is None]
        if simple and len(members) > len(simple):
            out.append(f"{name} {rtype} would be both simple and weighted")
        if len(simple) > 1:
            out.append(f"{name} {rtype} would have {len(simple)} simple records")
        if weighted and len(weighted) == len(members):
            if len(weighted) > MAX_WEIGHTED_PER_GROUP:
                out.append(f"{name} {rtype} would have {len(weighted)} weighted records (at most "
                           f"{MAX_WEIGHTED_PER_GROUP})")
            if sum(m.weight or 0 for m in weighted) == 0:
                out.append(f"{name} {rtype}: every weight would be 0 (Route53 then splits traffic evenly)")
    for name, types in sorted(types_at.items()):
        if "CNAME" in types and len(types) > 1:
            out.append(f"{name}: a CNAME cannot share its name with {', '.join(sorted(types - {'CNAME'}))}")
    return out


def validate_batch(batch: ChangeBatch, current: Sequence[RecordSet]) -> list[RecordSet]:
    """Check ``batch`` against a snapshot of the records it touches; return the records after it."""
    return apply_batch(current, batch)


# ---- building batches -----------------------------------------------------------------------


def shift_batch(pair: tuple[RecordSet, RecordSet], weights: tuple[int, int], *, comment: str = "") -> ChangeBatch:
    """ONE batch that sets both weights of a weighted pair (source, target): UPSERTs keep all else."""
    source, target = pair
    if not (source.weighted and target.weighted) or source.key[:2] != target.key[:2]:
        raise InvalidBatch([f"a shift needs two weighted records of one name and type, got {source.key} and {target.key}"])
    return ChangeBatch(comment=comment, changes=(
        Change(action="UPSERT", record=source.with_weight(weights[0])),
        Change(action="UPSERT", record=target.with_weight(weights[1])),
    ))


def replace_batch(current: Sequence[RecordSet], wanted: Sequence[RecordSet], *, comment: str = "",
                  create: Action = "CREATE") -> ChangeBatch:
    """ONE batch that turns ``current`` into ``wanted``.

    Records whose key (name, type, SetIdentifier) goes away are DELETEd exactly, so the batch
    fails whole if they changed since they were read; records whose key stays but whose
    content changes are UPSERTed; new keys are CREATEd (or UPSERTed with ``create="UPSERT"``:
    the same on AWS after the DELETEs, while moto refuses to CREATE a record identical to one
    created earlier in the zone's history). Unchanged records are left alone. Turning a simple
    record into a weighted pair is thus DELETE + CREATE + CREATE, atomic, and back again.
    """
    now = {r.key: r for r in current}
    then = {r.key: r for r in wanted}
    changes = [Change(action="DELETE", record=r) for r in current if r.key not in then]
    changes += [Change(action="UPSERT", record=r) for r in wanted if r.key in now and now[r.key] != r]
    changes += [Change(action=create, record=r) for r in wanted if r.key not in now]
    return ChangeBatch(changes=tuple(changes), comment=comment)


# ---- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Shift:
    """One step of a switchover: the target's share in percent and the two weights that give it."""

    percent: int
    source_weight: int
    target_weight: int

    def as_dict(self) -> dict[str, int]:
        return {"percent": self.percent, "source_weight": self.source_weight, "target_weight": self.target_weight}


def parse_steps(value: str | Sequence[Any]) -> tuple[int, ...]:
    """``"10,25,50,100"`` -> (10, 25, 50, 100); each a whole percent 0-100, strictly increasing."""
    raw = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    if not raw or raw == [""]:
        raise BadInput("--steps needs at least one percentage, e.g. 10,25,50,100")
    out: list[int] = []
    for item in raw:
        text = str(item).strip().removesuffix("%")
        if isinstance(item, bool) or not text.lstrip("-").isdigit():
            raise BadInput(f"--steps: {item!r} is not a whole percentage")
        p = int(text)
        if not 0 <= p <= 100:
            raise BadInput(f"--steps: {p} is outside 0-100")
        if out and p <= out[-1]:
            raise BadInput(f"--steps must increase: {p} comes after {out[-1]}")
        out.append(p)
    return tuple(out)


def weights_for(percent: int) -> tuple[int, int]:
    """(source, target) weights for the target's share; they always sum to 100, so never all zero."""
    if not 0 <= percent <= 100:
        raise BadInput(f"a share of {percent}% is outside 0-100")
    return 100 - percent, percent


def target_percent(source_weight: int, target_weight: int) -> float:
    total = source_weight + target_weight
    return 0.0 if total == 0 else 100.0 * target_weight / total


def schedule(steps: Sequence[int], *, current: tuple[int, int] = (100, 0)) -> list[Shift]:
    """The shifts still to make from the ``current`` (source, target) weights: never a step backwards."""
    now = target_percent(*current)
    out = []
    for p in steps:
        if p <= now:
            continue
        s, t = weights_for(p)
        out.append(Shift(percent=p, source_weight=s, target_weight=t))
    return out
