"""``ElbApi`` in memory: load balancers by DNS name, counted lookups."""

from __future__ import annotations

from meshops.drivers.elb_api import LoadBalancer, normalise


class FakeElb:
    def __init__(self, *balancers: LoadBalancer) -> None:
        self.balancers = {normalise(b.dns_name): b for b in balancers}
        self.lookups: list[str] = []

    def add(self, balancer: LoadBalancer) -> None:
        self.balancers[normalise(balancer.dns_name)] = balancer

    def find_by_dns_name(self, dns_name: str) -> LoadBalancer | None:
        self.lookups.append(dns_name)
        return self.balancers.get(normalise(dns_name))
