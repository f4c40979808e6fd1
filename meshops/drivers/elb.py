"""Elastic Load Balancing, read-only: which load balancer a DNS name is, its kind, zone ID and ports.

A weighted alias record to a load balancer must carry the load balancer's *canonical hosted
zone ID*, which depends on its kind and region (ALB/Classic and NLB differ: istio-reality.md
§8). The only trustworthy source is DescribeLoadBalancers: ``elbv2`` (ALB, NLB, GWLB) first,
then Classic ``elb``, matched by DNS name. The listener ports tell whether the load balancer
exposes the gateway's status port (15021) for a Route53 health check.

``ElbApi`` is what steps use; ``ElbClient`` implements it over boto3 (endpoint and credentials
from the usual chain, ``AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING[_V2]`` or ``AWS_ENDPOINT_URL``),
``FakeElb`` (elb_fake.py) in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from meshops.domain.errors import BadInput, DriverError

LbKind = Literal["classic", "application", "network", "gateway"]
# <name>-<id>.<region>.elb.amazonaws.com (Classic, ALB) or <name>-<id>.elb.<region>.amazonaws.com (NLB);
# China partitions end in .com.cn.
_ELB_HOST = re.compile(r"\.(?:(?P<r1>[a-z]{2}(?:-[a-z]+)+-\d)\.elb|elb\.(?P<r2>[a-z]{2}(?:-[a-z]+)+-\d))"
                       r"\.amazonaws\.com(?:\.cn)?\.?$")
_CREDENTIAL_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                               "AccessDenied", "AccessDeniedException", "ExpiredToken", "InvalidAccessKeyId"})


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


class ElbClient:
    """``ElbApi`` over boto3: one elbv2 and one elb client per region, built when first needed."""

    def __init__(self, *, default_region: str | None = None, factory: Any = None) -> None:
        self._factory = factory
        self._default_region = default_region
        self._clients: dict[tuple[str, str], Any] = {}
        # A load balancer's kind, zone ID and listeners do not change while one command runs: the
        # switchover's preflight and its run look each name up once between them.
        self._found: dict[str, LoadBalancer | None] = {}
        self.requests = 0

    def _client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            if self._factory is not None:
                self._clients[key] = self._factory(service, region)
            else:
                import boto3
                from botocore.config import Config

                self._clients[key] = boto3.session.Session().client(
                    service, region_name=region,
                    config=Config(retries={"mode": "adaptive", "max_attempts": 8}, user_agent_extra="meshops"))
        return self._clients[key]

    def _pages(self, service: str, region: str, op: str, key: str, **params: Any) -> list[dict[str, Any]]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            out: list[dict[str, Any]] = []
            for page in self._client(service, region).get_paginator(op).paginate(**params):
                self.requests += 1
                out += page.get(key) or []
            return out
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise BadInput(f"ELB: no usable AWS credentials ({exc})",
                           hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            text = f"ELB {op}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
            if code in _CREDENTIAL_CODES:
                raise BadInput(text, hint="meshops needs elasticloadbalancing:DescribeLoadBalancers "
                                          "and DescribeListeners") from None
            raise DriverError(text, temporary=code in ("Throttling", "ThrottlingException")) from None
        except BotoCoreError as exc:
            raise DriverError(f"ELB {op}: {type(exc).__name__}: {exc}", temporary=True) from None

    def find_by_dns_name(self, dns_name: str) -> LoadBalancer | None:
        want = normalise(dns_name)
        if want not in self._found:
            self._found[want] = self._find(want)
        return self._found[want]

    def _find(self, want: str) -> LoadBalancer | None:
        region = elb_region(want) or self._default_region or "us-east-1"
        for lb in self._pages("elbv2", region, "describe_load_balancers", "LoadBalancers"):
            if normalise(str(lb.get("DNSName", ""))) == want:
                listeners = self._pages("elbv2", region, "describe_listeners", "Listeners",
                                        LoadBalancerArn=lb["LoadBalancerArn"])
                return LoadBalancer(dns_name=want, name=str(lb.get("LoadBalancerName", "")),
                                    kind=str(lb.get("Type", "application")),  # type: ignore[arg-type]
                                    canonical_zone_id=str(lb.get("CanonicalHostedZoneId", "")),
                                    listener_ports=tuple(sorted(int(x["Port"]) for x in listeners)),
                                    region=region, scheme=str(lb.get("Scheme", "internet-facing")))
        for lb in self._pages("elb", region, "describe_load_balancers", "LoadBalancerDescriptions"):
            if normalise(str(lb.get("DNSName", ""))) == want:
                ports = sorted(int(d["Listener"]["LoadBalancerPort"]) for d in lb.get("ListenerDescriptions") or [])
                return LoadBalancer(dns_name=want, name=str(lb.get("LoadBalancerName", "")), kind="classic",
                                    canonical_zone_id=str(lb.get("CanonicalHostedZoneNameID") or ""),
                                    listener_ports=tuple(ports), region=region,
                                    scheme=str(lb.get("Scheme", "internet-facing")))
        return None


def from_environment() -> ElbClient:
    return ElbClient()
