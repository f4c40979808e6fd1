"""Switchover, before any change: the inputs, each cluster's ingress, and the DNS record as it is.

All three steps are read-only: ``meshops plan`` and ``meshops switchover`` run them first,
so bad input (unknown zone, missing record, a step outside 0-100, ``--from`` equal to
``--to``, no AWS credentials, an unreachable context) stops the command with exit 2
before anything is written. ``switchover.read_dns`` records the record group exactly as
it was; every later undo restores that snapshot.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from meshops.domain.durations import parse_duration
from meshops.domain.errors import BadInput, DriverError, NotFound, PreconditionFailed
from meshops.domain.weights import AliasTarget, RecordSet, fqdn, parse_steps, schedule
from meshops.drivers.elb_api import elb_region
from meshops.drivers.http_api import parse_connect_to, split_url
from meshops.ops.health import check_prometheus, check_promql
from meshops.ops.switchover_common import describe
from meshops.steps.base import Step, StepContext, StepInputs, StepOutputs
from meshops.steps.registry import register

DnsOwner = Literal["meshops", "external-dns"]
_SET_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _duration(v: str | float) -> str | float:
    parse_duration(v)
    return v


# ---- switchover.check_inputs ------------------------------------------------------------------


class CheckInputs(StepInputs):
    from_context: Annotated[str, Field(min_length=1)]
    to_context: Annotated[str, Field(min_length=1)]
    steps: list[int] | str
    probes: list[str] = Field(default_factory=list)
    connect_to: list[str] = Field(default_factory=list)
    prometheus: str | None = None
    gates: list[str] = Field(default_factory=list)
    durations: dict[str, str | float] = Field(default_factory=dict)


class CheckOutputs(StepOutputs):
    steps: list[int]


@register
class CheckInputsStep(Step[CheckInputs, CheckOutputs]):
    """Refuses bad input before anything is read from the clusters or Route53 (BadInput, exit 2)."""

    name = "switchover.check_inputs"
    Inputs = CheckInputs
    Outputs = CheckOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"prometheus"})

    def run(self, inputs: CheckInputs, ctx: StepContext) -> CheckOutputs:
        if inputs.from_context == inputs.to_context:
            raise BadInput(f"--from and --to are both {inputs.from_context!r}: a switchover needs two clusters")
        steps = parse_steps(inputs.steps)
        for name, value in inputs.durations.items():
            try:
                parse_duration(value)
            except ValueError as exc:
                raise BadInput(f"--{name.replace('_', '-')}: {exc}") from None
        for url in inputs.probes:
            split_url(url)
        parse_connect_to(inputs.connect_to)
        for expr in inputs.gates:
            check_promql(expr)
        if inputs.gates and not inputs.prometheus:
            raise BadInput("--gate-promql needs --prometheus URL")
        if inputs.gates and inputs.prometheus:
            check_prometheus(ctx.drivers.prometheus(inputs.prometheus), inputs.gates)
        if not inputs.probes and not inputs.gates:
            ctx.log.warning("switchover.unwatched", hint="no --probe and no --gate-promql: each step only waits")
        return CheckOutputs(steps=list(steps))

    def undo(self, inputs: CheckInputs, outputs: CheckOutputs | None, ctx: StepContext) -> None:
        return None


# ---- switchover.find_ingress ------------------------------------------------------------------


class IngressInputs(StepInputs):
    from_context: str
    to_context: str
    namespace: str = "istio-system"
    service: str = "istio-ingressgateway"


class IngressOutputs(StepOutputs):
    source: str  # load balancer hostname or IP
    target: str
    source_kind: Literal["hostname", "ip"]
    target_kind: Literal["hostname", "ip"]
    # The Service's ports ({name, port}) and, for an AWS load balancer, what ELB says of it
    # (kind, canonical hosted zone ID, listener ports): health checks and alias targets need them.
    source_ports: list[dict[str, Any]] = Field(default_factory=list)
    target_ports: list[dict[str, Any]] = Field(default_factory=list)
    source_lb: dict[str, Any] | None = None
    target_lb: dict[str, Any] | None = None


def service_ports(kube: Any, namespace: str, service: str) -> list[dict[str, Any]]:
    svc = kube.get("v1", "Service", service, namespace) or {}
    return [{"name": str(p.get("name", "")), "port": int(p["port"])}
            for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") is not None]


def load_balancer(ctx: StepContext, address: str, kind: str) -> dict[str, Any] | None:
    """ELB's view of an ingress hostname; None for an address that is not an AWS load balancer's."""
    if kind != "hostname" or elb_region(address) is None:
        return None
    lb = ctx.drivers.elb().find_by_dns_name(address)
    if lb is None:
        raise PreconditionFailed(f"{address} looks like an AWS load balancer, but neither elbv2 nor elb "
                                 "DescribeLoadBalancers knows it in this account and region")
    return lb.as_dict()


def ingress_address(kube: Any, namespace: str, service: str) -> tuple[str, Literal["hostname", "ip"]]:
    """The load balancer address of a gateway Service: its hostname, else its IP."""
    try:
        svc = kube.get("v1", "Service", service, namespace)
    except DriverError as exc:
        raise PreconditionFailed(f"cannot reach context {kube.context!r}: {exc.message}") from None
    if svc is None:
        raise PreconditionFailed(f"context {kube.context!r} has no Service {namespace}/{service}")
    if (svc.get("spec") or {}).get("type") != "LoadBalancer":
        raise PreconditionFailed(f"{namespace}/{service} in {kube.context!r} is not a LoadBalancer Service")
    for entry in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        if entry.get("hostname"):
            return str(entry["hostname"]).lower().rstrip("."), "hostname"
        if entry.get("ip"):
            return str(entry["ip"]), "ip"
    raise PreconditionFailed(f"{namespace}/{service} in {kube.context!r} has no load balancer address yet")


@register
class FindIngress(Step[IngressInputs, IngressOutputs]):
    """Each cluster's ingress: the load balancer hostname (or IP) of its gateway Service."""

    name = "switchover.find_ingress"
    Inputs = IngressInputs
    Outputs = IngressOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"kube", "elb"})

    def run(self, inputs: IngressInputs, ctx: StepContext) -> IngressOutputs:
        found, ports = [], []
        for context in (inputs.from_context, inputs.to_context):
            kube = ctx.drivers.kube_for(context)
            try:
                kube.server_version()
            except DriverError as exc:
                raise PreconditionFailed(f"cannot reach context {context!r}: {exc.message}") from None
            found.append(ingress_address(kube, inputs.namespace, inputs.service))
            ports.append(service_ports(kube, inputs.namespace, inputs.service))
        (source, skind), (target, tkind) = found
        if source == target:
            raise PreconditionFailed(f"{inputs.from_context!r} and {inputs.to_context!r} share the ingress {source}: "
                                     "weights between them would move nothing")
        source_lb, target_lb = load_balancer(ctx, source, skind), load_balancer(ctx, target, tkind)
        ctx.log.info("switchover.ingress", source=source, target=target,
                     source_lb=(source_lb or {}).get("kind"), target_lb=(target_lb or {}).get("kind"))
        return IngressOutputs(source=source, target=target, source_kind=skind, target_kind=tkind,
                              source_ports=ports[0], target_ports=ports[1], source_lb=source_lb, target_lb=target_lb)

    def undo(self, inputs: IngressInputs, outputs: IngressOutputs | None, ctx: StepContext) -> None:
        return None


# ---- switchover.read_dns ----------------------------------------------------------------------


class DnsInputs(StepInputs):
    zone: Annotated[str, Field(min_length=1)]
    record: Annotated[str, Field(min_length=1)]
    steps: list[int]
    source_id: Annotated[str, Field(min_length=1)]
    target_id: Annotated[str, Field(min_length=1)]
    source_ingress: str
    target_ingress: str
    source_kind: Literal["hostname", "ip"]
    target_kind: Literal["hostname", "ip"]
    target_lb: dict[str, Any] | None = None
    dns_owner: DnsOwner = "meshops"

    @field_validator("source_id", "target_id")
    @classmethod
    def _set_id(cls, v: str) -> str:
        if not _SET_ID.fullmatch(v):
            raise ValueError(f"{v!r} cannot be a Route53 SetIdentifier (1-128 of A-Z a-z 0-9 _ . : -)")
        return v


class DnsOutputs(StepOutputs):
    zone_id: str
    zone_name: str
    name: str
    type: str
    original: list[dict[str, Any]]  # the record group before the switchover, exactly as Route53 had it
    pair: list[dict[str, Any]]  # (source, target) weighted records at the initial weights, no health checks
    initial_weights: list[int]  # (source, target) before the switchover
    ttl: int
    schedule: list[dict[str, int]]
    owner: DnsOwner
    external_dns_owners: list[str]


def _owners(records: list[RecordSet]) -> list[str]:
    out = []
    for r in records:
        if r.type != "TXT":
            continue
        for value in r.values:
            text = value.strip('"')
            if "heritage=external-dns" in text:
                m = re.search(r"external-dns/owner=([^,\"]+)", text)
                out.append(m.group(1) if m else "?")
    return sorted(set(out))


def _points_at(record: RecordSet, address: str) -> bool:
    target = record.target.removeprefix("dualstack.")
    return target == address.lower().rstrip(".")


def make_pair(model: RecordSet, *, source_id: str, target_id: str, source: str, target: str,
              target_kind: str, weights: tuple[int, int], existing_target: RecordSet | None,
              target_lb: dict[str, Any] | None = None) -> tuple[RecordSet, RecordSet]:
    """The weighted pair built from the record as it is: same name, type and TTL; one value each."""
    src = RecordSet(name=model.name, type=model.type, ttl=model.ttl, values=model.values, alias=model.alias,
                    set_identifier=source_id, weight=weights[0], health_check_id=model.health_check_id)
    if existing_target is not None:
        return src, existing_target.with_weight(weights[1])
    if model.alias is not None:
        if target_kind != "hostname":
            raise PreconditionFailed(f"{model.name} is an alias; the target ingress has only an IP ({target})")
        # The alias carries the *target* load balancer's canonical zone ID, which differs by LB kind
        # and region (istio-reality.md §8): never the source record's.
        zone_id = str((target_lb or {}).get("canonical_zone_id") or "")
        if not zone_id:
            raise PreconditionFailed(f"{model.name} is an alias; ELB DescribeLoadBalancers gives no canonical hosted "
                                     f"zone ID for the target {target}, so no valid alias to it can be built")
        alias = AliasTarget(hosted_zone_id=zone_id, dns_name=target,
                            evaluate_target_health=model.alias.evaluate_target_health)
        tgt = RecordSet(name=model.name, type=model.type, alias=alias, set_identifier=target_id, weight=weights[1])
    else:
        wants = "hostname" if model.type == "CNAME" else "ip"
        if target_kind != wants:
            raise PreconditionFailed(f"{model.name} is a {model.type} record; the target ingress offers a "
                                     f"{target_kind} ({target}), not a{'n IP' if wants == 'ip' else ' hostname'}")
        tgt = RecordSet(name=model.name, type=model.type, ttl=model.ttl, values=(target,),
                        set_identifier=target_id, weight=weights[1])
    return src, tgt


@register
class ReadDns(Step[DnsInputs, DnsOutputs]):
    """Finds the zone and record, checks who owns it, and records it exactly as it is."""

    name = "switchover.read_dns"
    Inputs = DnsInputs
    Outputs = DnsOutputs
    read_only = True
    side_effect_free = True
    needs = frozenset({"route53"})

    def run(self, inputs: DnsInputs, ctx: StepContext) -> DnsOutputs:
        r53 = ctx.drivers.route53()
        try:
            zone = r53.find_zone(inputs.zone)
        except NotFound:
            raise BadInput(f"--zone {inputs.zone}: no such hosted zone in this AWS account") from None
        name = fqdn(inputs.record if "." in inputs.record.rstrip(".") else f"{inputs.record}.{zone.name}")
        if not (name == zone.name or name.endswith("." + zone.name)):
            raise BadInput(f"--record {name} is not inside the zone {zone.name}")
        everything = r53.list_records(zone.id, name)
        routed = [r for r in everything if r.type in ("A", "AAAA", "CNAME")]
        types = sorted({r.type for r in routed})
        if not routed:
            raise BadInput(f"--record {name}: no A, AAAA or CNAME record in zone {zone.name}")
        if len(types) > 1:
            raise PreconditionFailed(f"{name} has {' and '.join(types)} records; meshops switches one type per name")
        rtype = types[0]
        owners_seen = _owners(everything) + _owners(r53.list_records(zone.id, f"{rtype.lower()}-{name}"))
        if owners_seen and inputs.dns_owner != "external-dns":
            raise BadInput(f"{name} is owned by external-dns (TXT owner {', '.join(owners_seen)}); it would revert "
                           "meshops's weights. Pass --dns-owner external-dns to drive its annotations instead")
        if not owners_seen and inputs.dns_owner == "external-dns":
            raise BadInput(f"--dns-owner external-dns, but no external-dns ownership (TXT) records exist for {name}")
        pair, initial = self._pair(routed, name, inputs)
        shifts = schedule(parse_steps(inputs.steps), current=initial)
        ttl = max(r.effective_ttl for r in pair)
        ctx.log.info("switchover.dns", zone=zone.id, name=name, type=rtype, found=describe(routed),
                     initial_weights=list(initial), shifts=[s.percent for s in shifts])
        return DnsOutputs(zone_id=zone.id, zone_name=zone.name, name=name, type=rtype,
                          original=[r.to_aws() for r in routed], pair=[r.to_aws() for r in pair],
                          initial_weights=list(initial), ttl=ttl, schedule=[s.as_dict() for s in shifts],
                          owner=inputs.dns_owner, external_dns_owners=owners_seen)

    def _pair(self, routed: list[RecordSet], name: str, inputs: DnsInputs) -> tuple[tuple[RecordSet, RecordSet], tuple[int, int]]:
        others = [r for r in routed if r.other_policy is not None]
        if others:
            raise PreconditionFailed(f"{name} uses the {others[0].other_policy} routing policy; meshops drives weights only")
        simple = [r for r in routed if not r.weighted]
        if simple:
            model = simple[0]
            if len(simple) != len(routed):
                raise PreconditionFailed(f"{name} is both simple and weighted: {describe(routed)}")
            if not _points_at(model, inputs.source_ingress):
                raise PreconditionFailed(f"{name} points at {model.target}, not at the ingress of the source cluster "
                                         f"({inputs.source_ingress}); are --from and --to the right way round?")
            if model.alias is None and len(model.values) != 1:
                raise PreconditionFailed(f"{name} has {len(model.values)} values; a weighted record holds one")
            pair = make_pair(model, source_id=inputs.source_id, target_id=inputs.target_id,
                             source=inputs.source_ingress, target=inputs.target_ingress,
                             target_kind=inputs.target_kind, weights=(100, 0), existing_target=None,
                             target_lb=inputs.target_lb)
            return pair, (100, 0)
        by_id = {r.set_identifier: r for r in routed}
        strangers = sorted(str(i) for i in by_id if i not in (inputs.source_id, inputs.target_id))
        if strangers:
            raise PreconditionFailed(f"{name} has weighted records of other sets ({', '.join(strangers)}); "
                                     f"meshops shifts between {inputs.source_id} and {inputs.target_id} only")
        if inputs.source_id not in by_id:
            raise PreconditionFailed(f"{name} has no weighted record {inputs.source_id!r} for the source cluster")
        src, tgt = by_id[inputs.source_id], by_id.get(inputs.target_id)
        if not _points_at(src, inputs.source_ingress):
            raise PreconditionFailed(f"{name} [{inputs.source_id}] points at {src.target}, not at {inputs.source_ingress}")
        if tgt is not None and not _points_at(tgt, inputs.target_ingress):
            raise PreconditionFailed(f"{name} [{inputs.target_id}] points at {tgt.target}, not at {inputs.target_ingress}")
        weights = (int(src.weight or 0), int(tgt.weight or 0) if tgt is not None else 0)
        if sum(weights) == 0:
            raise PreconditionFailed(f"every weight of {name} is 0 (Route53 splits evenly); fix it by hand first")
        pair = make_pair(src, source_id=inputs.source_id, target_id=inputs.target_id, source=inputs.source_ingress,
                         target=inputs.target_ingress, target_kind=inputs.target_kind, weights=weights,
                         existing_target=tgt, target_lb=inputs.target_lb)
        return (src, pair[1]), weights

    def undo(self, inputs: DnsInputs, outputs: DnsOutputs | None, ctx: StepContext) -> None:
        return None
