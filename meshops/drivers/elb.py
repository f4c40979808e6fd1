"""``ElbApi`` over boto3: DescribeLoadBalancers (``elbv2`` then Classic ``elb``) and DescribeListeners.

See ``elb_api.py`` for why meshops asks ELB at all (canonical hosted zone IDs, listener ports).
"""

from __future__ import annotations

from typing import Any

from meshops.domain.errors import BadInput, DriverError
from meshops.drivers.aws_session import AwsSession
from meshops.drivers.elb_api import ElbApi as ElbApi
from meshops.drivers.elb_api import LoadBalancer as LoadBalancer
from meshops.drivers.elb_api import elb_region, normalise

_CREDENTIAL_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                               "AccessDenied", "AccessDeniedException", "ExpiredToken", "InvalidAccessKeyId"})


class ElbClient:
    """``ElbApi`` over boto3: one elbv2 and one elb client per region, built when first needed."""

    def __init__(self, *, default_region: str | None = None, profile: str | None = None, factory: Any = None,
                 aws: AwsSession | None = None) -> None:
        self._factory = factory
        self._default_region = default_region
        self._profile = profile
        self._clients: dict[tuple[str, str], Any] = {}
        # A load balancer's kind, zone ID and listeners do not change while one command runs: the
        # switchover's preflight and its run look each name up once between them.
        self._found: dict[str, LoadBalancer | None] = {}
        self._listings: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # One session for every client: its loader parses each service model once.
        self._aws = aws or AwsSession(profile=profile)
        self.requests = 0

    def _client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            if self._factory is not None:
                self._clients[key] = self._factory(service, region)
            else:
                from botocore.config import Config

                self._clients[key] = self._aws.client(
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

    def _listing(self, service: str, region: str, key: str) -> list[dict[str, Any]]:
        """Every load balancer of one API in one region, listed once per command (both ingresses
        of a switchover are usually in one region)."""
        if (service, region) not in self._listings:
            self._listings[(service, region)] = self._pages(service, region, "describe_load_balancers", key)
        return self._listings[(service, region)]

    def find_by_dns_name(self, dns_name: str) -> LoadBalancer | None:
        want = normalise(dns_name)
        if want not in self._found:
            self._found[want] = self._find(want)
        return self._found[want]

    def _find(self, want: str) -> LoadBalancer | None:
        region = elb_region(want) or self._default_region or "us-east-1"
        for lb in self._listing("elbv2", region, "LoadBalancers"):
            if normalise(str(lb.get("DNSName", ""))) == want:
                listeners = self._pages("elbv2", region, "describe_listeners", "Listeners",
                                        LoadBalancerArn=lb["LoadBalancerArn"])
                return LoadBalancer(dns_name=want, name=str(lb.get("LoadBalancerName", "")),
                                    kind=str(lb.get("Type", "application")),  # type: ignore[arg-type]
                                    canonical_zone_id=str(lb.get("CanonicalHostedZoneId", "")),
                                    listener_ports=tuple(sorted(int(x["Port"]) for x in listeners)),
                                    region=region, scheme=str(lb.get("Scheme", "internet-facing")))
        for lb in self._listing("elb", region, "LoadBalancerDescriptions"):
            if normalise(str(lb.get("DNSName", ""))) == want:
                ports = sorted(int(d["Listener"]["LoadBalancerPort"]) for d in lb.get("ListenerDescriptions") or [])
                return LoadBalancer(dns_name=want, name=str(lb.get("LoadBalancerName", "")), kind="classic",
                                    canonical_zone_id=str(lb.get("CanonicalHostedZoneNameID") or ""),
                                    listener_ports=tuple(ports), region=region,
                                    scheme=str(lb.get("Scheme", "internet-facing")))
        return None


def from_environment() -> ElbClient:
    return ElbClient()
