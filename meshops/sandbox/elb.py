"""Load balancers for the sandbox's ingress gateways, in moto's ELB services, as AWS would run them.

On EKS the cloud controller (or the AWS Load Balancer Controller) creates a load balancer for a
``type: LoadBalancer`` Service, with one listener per Service port, and writes the load
balancer's DNS name into ``status.loadBalancer.ingress[0].hostname``. This extension does the
same against the moto server the Route53 extension started (one endpoint serves every service):

- the first cluster's ingress gets a Classic ELB, the next a Network LB, alternating, so a
  blue-green switchover moves between the two kinds as it can on AWS;
- their DNS names have AWS's shapes (``<name>-<n>.<region>.elb.amazonaws.com`` for Classic,
  ``<name>-<hex>.elb.<region>.amazonaws.com`` for NLB) and their canonical hosted zone IDs
  are AWS's per-kind IDs (istio-reality.md §8, from hashicorp/terraform-provider-aws
  ``hosted_zone_id_data_source.go``): moto leaves the Classic one empty and gives every NLB a
  placeholder, so a switchover that copied the source record's zone ID would go unnoticed;
- the hostnames do not resolve on this machine; ``MESHOPS_CONNECT_TO`` in DIR/env maps each
  load balancer port that an HTTP client can use (the Service's ``http2`` and ``status-port``)
  to the cluster's loopback ingress, the way a tunnel to a private LB would. meshops honours
  that variable for every probe (README "Global options"); nothing here is sandbox-only.

Runs after the Istio extension (``meshops.sandbox.cli`` lists it second).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from meshops.sandbox.route53 import DUMMY_KEY, DUMMY_REGION

log = logging.getLogger("meshops.sandbox.elb")

ACCOUNT = "123456789012"  # moto's default account
GATEWAY = ("istio-system", "istio-ingressgateway")
# Canonical hosted zone IDs per region (istio-reality.md §8).
CLASSIC_ZONE_IDS = {"us-east-1": "Z35SXDOTRQ7X7K", "us-west-2": "Z1H1FL5HABSF5", "eu-west-1": "Z32O12XQLNTSW2"}
NLB_ZONE_IDS = {"us-east-1": "Z26RNL4JYFTOTI", "us-west-2": "Z18D5FSROUN65G", "eu-west-1": "Z2IFOLAFXWLO4F"}
# Ports an HTTP client can reach through the loopback ingress (it speaks plain HTTP, no TLS).
HTTP_PORT_NAMES = ("status-port", "http2", "http")


@dataclass(frozen=True, kw_only=True)
class IngressLB:
    cluster: str
    kind: str  # classic | network
    name: str
    dns_name: str
    zone_id: str
    ports: tuple[int, ...]
    loopback: str  # host:port of the cluster's ingress server


def _clients(endpoint: str) -> dict[str, Any]:
    import boto3

    kw = {"endpoint_url": endpoint, "region_name": DUMMY_REGION, "aws_access_key_id": DUMMY_KEY,
          "aws_secret_access_key": DUMMY_KEY}
    return {name: boto3.client(name, **kw) for name in ("elb", "elbv2", "ec2")}


def _digest(text: str, n: int) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:n]


def create_classic(clients: dict[str, Any], cluster: str, ports: list[dict[str, Any]]) -> tuple[str, str]:
    """A Classic ELB with a TCP listener per Service port; (name, DNS name) with AWS's shape and zone ID."""
    from moto.elb.models import elb_backends

    name = f"a{_digest(cluster + '-ingress', 12)}"
    listeners = [{"Protocol": "TCP", "LoadBalancerPort": int(p["port"]), "InstancePort": int(p.get("nodePort") or
                  30000 + int(p["port"]) % 2768)} for p in ports]
    clients["elb"].create_load_balancer(LoadBalancerName=name, Listeners=listeners,
                                        AvailabilityZones=[f"{DUMMY_REGION}a"], Scheme="internet-facing")
    lb = elb_backends[ACCOUNT][DUMMY_REGION].load_balancers[name]
    lb.dns_name = f"{name}-{int(_digest(cluster, 8), 16) % 10**10}.{DUMMY_REGION}.elb.amazonaws.com"
    # moto leaves CanonicalHostedZoneNameID empty; its response reads this attribute when present.
    lb.canonical_hosted_zone_name_id = CLASSIC_ZONE_IDS[DUMMY_REGION]  # type: ignore[attr-defined]
    return name, str(lb.dns_name)


def create_network(clients: dict[str, Any], cluster: str, ports: list[dict[str, Any]]) -> tuple[str, str]:
    """An NLB with a TCP listener (and target group) per Service port."""
    from moto.elbv2.models import elbv2_backends

    name = f"a{_digest(cluster + '-ingress', 12)}"
    ec2, v2 = clients["ec2"], clients["elbv2"]
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    created = v2.create_load_balancer(Name=name, Type="network", Subnets=[subnet], Scheme="internet-facing")
    arn = created["LoadBalancers"][0]["LoadBalancerArn"]
    for p in ports:
        tg = v2.create_target_group(Name=f"k8s-{_digest(cluster, 6)}-{int(p['port'])}", Protocol="TCP",
                                    Port=int(p.get("nodePort") or 30000 + int(p["port"]) % 2768), VpcId=vpc,
                                    TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        v2.create_listener(LoadBalancerArn=arn, Protocol="TCP", Port=int(p["port"]),
                           DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    lb = elbv2_backends[ACCOUNT][DUMMY_REGION].load_balancers[arn]
    lb.dns_name = f"{name}-{_digest(cluster + arn, 16)}.elb.{DUMMY_REGION}.amazonaws.com"
    lb.canonical_hosted_zone_id = NLB_ZONE_IDS[DUMMY_REGION]
    return name, str(lb.dns_name)


def connect_to_entries(lbs: list[IngressLB], service_ports: dict[str, list[dict[str, Any]]]) -> list[str]:
    """``HOST:PORT:CONNECT_HOST:CONNECT_PORT`` for each LB port an HTTP client can use."""
    out = []
    for lb in lbs:
        for p in service_ports[lb.cluster]:
            if str(p.get("name", "")) in HTTP_PORT_NAMES:
                out.append(f"{lb.dns_name}:{int(p['port'])}:{lb.loopback}")
    return out


def configure(ctx: Any) -> None:
    """Sandbox extension: an LB per ingress gateway, its hostname on the Service, the record re-pointed."""
    from meshops.sandbox.apiserver.controllers.util import write_status
    from meshops.sandbox.apiserver.kinds import SERVICES

    r53 = ctx.state.get("route53") or {}
    ingress = ctx.state.get("ingress") or {}
    if not r53.get("endpoint") or not ingress:
        return
    clients = _clients(r53["endpoint"])
    lbs: list[IngressLB] = []
    service_ports: dict[str, list[dict[str, Any]]] = {}
    old_hosts: dict[str, str] = {}
    for index, (cluster_name, cluster) in enumerate(ctx.clusters.items()):
        svc = cluster.store.get(SERVICES, *GATEWAY)
        if svc is None or (svc.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        ports = list((svc.get("spec") or {}).get("ports") or [])
        service_ports[cluster_name] = ports
        kind = "classic" if index % 2 == 0 else "network"
        name, dns = (create_classic if kind == "classic" else create_network)(clients, cluster_name, ports)
        zone_id = (CLASSIC_ZONE_IDS if kind == "classic" else NLB_ZONE_IDS)[DUMMY_REGION]
        loopback = str(ingress.get(cluster_name, {}).get("url", "")).removeprefix("http://")
        lbs.append(IngressLB(cluster=cluster_name, kind=kind, name=name, dns_name=dns, zone_id=zone_id,
                             ports=tuple(int(p["port"]) for p in ports), loopback=loopback))
        old = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        old_hosts[cluster_name] = str(old[0].get("hostname", "")) if old else ""
        # What the cloud controller does once the LB exists.
        write_status(cluster, SERVICES, svc, {**(svc.get("status") or {}),
                                              "loadBalancer": {"ingress": [{"hostname": dns}]}})
        suffix = "".join(c if c.isalnum() else "_" for c in cluster_name).upper()
        ctx.env[f"MESHOPS_SANDBOX_INGRESS_HOST_{suffix}"] = dns
        ingress[cluster_name].update(hostname=dns, load_balancer={"type": kind, "name": name, "zone_id": zone_id})
        log.info("ingress of %s behind %s LB %s (%s)", cluster_name, kind, dns, zone_id)
    if not lbs:
        return
    ctx.env["MESHOPS_CONNECT_TO"] = " ".join(connect_to_entries(lbs, service_ports))
    ctx.state["elb"] = {lb.cluster: {"type": lb.kind, "dns_name": lb.dns_name, "zone_id": lb.zone_id} for lb in lbs}
    _repoint_record(ctx, r53, old_hosts, {lb.cluster: lb.dns_name for lb in lbs})
    facts = ctx.directory / "sandbox.json"
    if facts.exists():
        data = json.loads(facts.read_text())
        data["ingress"], data["elb"], data["route53"] = ingress, ctx.state["elb"], r53
        facts.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _repoint_record(ctx: Any, r53: dict[str, Any], old: dict[str, str], new: dict[str, str]) -> None:
    """The app record was seeded at the Service's placeholder hostname; point it at the LB now."""
    from meshops.sandbox.route53 import Route53Sandbox

    cluster = r53.get("cluster")
    if not cluster or cluster not in new or r53.get("target") != old.get(cluster):
        return
    sandbox = Route53Sandbox(zone=r53["zone"], record=r53["record"], endpoint=r53["endpoint"])
    sandbox.seed(new[cluster])
    r53["target"] = new[cluster]
