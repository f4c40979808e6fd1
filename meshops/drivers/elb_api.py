"""Elastic Load Balancing, read-only: which load balancer a DNS name is, its kind, zone ID and ports.

A weighted alias record to a load balancer must carry the load balancer's *canonical hosted
zone ID*, which depends on its kind and region (ALB/Classic and NLB differ: istio-reality.md
§8). The only trustworthy source is DescribeLoadBalancers: ``elbv2`` (ALB, NLB, GWLB) first,
then Classic ``elb``, matched by DNS name. The listener ports tell whether the load balancer
exposes the gateway's status port (15021) for a Route53 health check.

``ElbApi`` (this module) is what steps use; ``ElbClient`` (elb.py) implements it over boto3
(endpoint and credentials from the usual chain, ``AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING[_V2]``
or ``AWS_ENDPOINT_URL``), ``FakeElb`` (elb_fake.py) in memory. Steps import this module only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

LbKind = Literal["classic", "application", "network", "gateway"]
# <name>-<id>.<region>.elb.amazonaws.com (Classic, ALB) or <name>-<id>.elb.<region>.amazonaws.com (NLB);
# China partitions end in .com.cn.
_ELB_HOST = re.compile(r"\.(?:(?P<r1>[a-z]{2}(?:-[a-z]+)+-\d)\.elb|elb\.(?P<r2>[a-z]{2}(?:-[a-z]+)+-\d))"
                       r"\.amazonaws\.com(?:\.cn)?\.?$")


@dataclass(frozen=True, kw_only=True)
class LoadBalancer:
    dns_name: str  # lowercase, no trailing dot
    name: str
    kind: LbKind
    canonical_zone_id: str
    listener_ports: tuple[int, ...]
    region: str
    scheme: str = "internet-facing"

    def as_dict(self) -> dict[str, Any]:
        return {"dns_name": self.dns_name, "name": self.name, "kind": self.kind,
                "canonical_zone_id": self.canonical_zone_id, "listener_ports": list(self.listener_ports),
                "region": self.region, "scheme": self.scheme}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadBalancer:
        return cls(dns_name=str(data["dns_name"]), name=str(data["name"]), kind=data["kind"],
                   canonical_zone_id=str(data["canonical_zone_id"]),
                   listener_ports=tuple(int(p) for p in data.get("listener_ports") or ()),
                   region=str(data.get("region", "")), scheme=str(data.get("scheme", "internet-facing")))


def normalise(dns_name: str) -> str:
    return dns_name.lower().rstrip(".").removeprefix("dualstack.")


def elb_region(dns_name: str) -> str | None:
    """The region in an ELB DNS name, or None when the name is not an ELB's."""
    m = _ELB_HOST.search(normalise(dns_name))
    return (m.group("r1") or m.group("r2")) if m else None


class ElbApi(Protocol):
    def find_by_dns_name(self, dns_name: str) -> LoadBalancer | None: ...


