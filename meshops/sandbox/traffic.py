"""Live synthetic traffic for the sandbox: clients that resolve the record as Route53 would answer.

moto stores weighted records but answers no DNS (route53-and-engines.md §A3), so the sandbox
answers for it, by Route53's rules (istio-reality.md §8; Route53 DG "Weighted routing" and
"How Route 53 chooses records when health checking is configured"):

- a simple record: its value;
- a weighted group: each record's share is weight / sum of weights; a weight-0 record is never
  returned unless every record has weight 0, then all are returned with equal probability;
- with health checks: only healthy records count; weight-0 records are considered only when
  every non-zero record is unhealthy; if every record is unhealthy, all are treated as healthy;
- a record with no health check (or an alias with EvaluateTargetHealth false) is healthy; an
  alias with EvaluateTargetHealth true follows its load balancer's health (here: the gateway's
  ``/healthz/ready``, the status port the LB checks: istio/istio#12503).

Health checks are evaluated by the sandbox against each ingress as Route53's checkers would:
the check's endpoint (FQDN or IP, port, path) is requested every interval (the check's
RequestInterval, or ``check_interval`` to keep tests short), HTTP(S) healthy on 2xx/3xx, TCP on
a connection; ``FailureThreshold`` results in a row flip the status.

``LoadGenerator`` sends requests at a fixed rate on loopback only (it refuses any other address:
bounded by rate, duration and destination), from ``clients`` simulated clients that each cache
their answer for the record's TTL (60 s for an alias, ELB's), and counts successes and failures
per cluster per second. ``meshops sandbox traffic`` runs it; the JSON lines it writes
(``{"ts", "cluster", "ok", "failed"}`` per second) are what ``meshops report --traffic`` draws.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_RATE = 500.0  # requests per second: a load generator for a laptop, not a benchmark tool
MAX_SECONDS = 3600.0
ALIAS_TTL = 60


@dataclass(frozen=True, kw_only=True)
class Ingress:
    cluster: str
    hostname: str
    address: tuple[str, int]  # loopback host, port


def sandbox_ingresses(directory: Path) -> dict[str, Ingress]:
    """hostname -> Ingress, from DIR/sandbox.json."""
    facts = json.loads((Path(directory) / "sandbox.json").read_text())
    out = {}
    for cluster, info in (facts.get("ingress") or {}).items():
        if info.get("hostname") and info.get("url"):
            host, _, port = str(info["url"]).removeprefix("http://").rpartition(":")
            out[str(info["hostname"]).lower()] = Ingress(cluster=cluster, hostname=str(info["hostname"]).lower(),
                                                         address=(host, int(port)))
    return out


def _get(address: tuple[str, int], path: str, host: str, timeout: float) -> int | None:
    """Status of one GET on loopback, None when no connection (or answer) came."""
    if address[0] not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the sandbox's traffic stays on loopback; refusing {address[0]}")
    import http.client  # here, not at the top: `meshops sandbox --help` imports this module

    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "meshops-sandbox-traffic/1"})
        resp = conn.getresponse()
        resp.read()
        return int(resp.status)
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class _CheckState:
    config: dict[str, Any]
    healthy: bool = True
    streak: int = 0
    checked: float = float("-inf")


class HealthCheckers:
    """Route53's health checkers for the sandbox: each check's endpoint probed on its interval."""

    def __init__(self, route53: Any, ingresses: dict[str, Ingress], *, check_interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.route53, self.ingresses = route53, ingresses
        self.check_interval, self._clock = check_interval, clock
        self._checks: dict[str, _CheckState] = {}
        self._lock = threading.Lock()

    def _endpoint(self, host: str) -> tuple[str, int] | None:
        ingress = self.ingresses.get(host.lower().rstrip(".").removeprefix("dualstack."))
        return ingress.address if ingress else None

    def _probe(self, config: dict[str, Any]) -> bool:
        address = self._endpoint(str(config.get("FullyQualifiedDomainName") or config.get("IPAddress") or ""))
        if address is None:
            return False  # a checker cannot reach what does not exist
        kind = str(config.get("Type", "HTTP"))
        if kind == "TCP":
            return _get(address, "/", "health-check", 2.0) is not None
        status = _get(address, str(config.get("ResourcePath") or "/"),
                      str(config.get("FullyQualifiedDomainName") or "health-check"), 4.0)
        return status is not None and 200 <= status < 400

    def healthy(self, check_id: str) -> bool:
        with self._lock:
            state = self._checks.get(check_id)
            if state is None:
                try:
                    config = self.route53.get_health_check(HealthCheckId=check_id)["HealthCheck"]["HealthCheckConfig"]
                except Exception:  # a record naming a missing check: Route53 would refuse it; count healthy
                    return True
                state = self._checks[check_id] = _CheckState(config=config)
            interval = self.check_interval or float(state.config.get("RequestInterval", 30))
            now = self._clock()
            if now - state.checked < interval:
                return state.healthy
            state.checked = now
        ok = self._probe(state.config)
        with self._lock:
            threshold = int(state.config.get("FailureThreshold", 3))
            if ok == state.healthy:
                state.streak = 0
            else:
                state.streak += 1
                if state.streak >= threshold:
                    state.healthy, state.streak = ok, 0
            return state.healthy

    def lb_healthy(self, hostname: str) -> bool:
        """An alias target's health (EvaluateTargetHealth): the gateway's readiness behind the LB."""
        address = self._endpoint(hostname)
        return address is not None and _get(address, "/healthz/ready", hostname, 2.0) == 200


class Answerer:
    """Answers the record by Route53's rules (module docstring); re-reads the records every ``refresh`` s."""

    def __init__(self, route53: Any, zone_id: str, name: str, checkers: HealthCheckers, *,
                 rng: random.Random | None = None, refresh: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.route53, self.zone_id = route53, zone_id
        self.name = name if name.endswith(".") else name + "."
        self.checkers, self.rng, self.refresh, self._clock = checkers, rng or random.Random(), refresh, clock
        self._records: list[dict[str, Any]] = []
        self._read = float("-inf")
        self._lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._clock() - self._read >= self.refresh:
                data = self.route53.list_resource_record_sets(HostedZoneId=self.zone_id, StartRecordName=self.name)
                self._records = [r for r in data["ResourceRecordSets"] if r["Name"].lower() == self.name
                                 and r["Type"] in ("A", "AAAA", "CNAME")]
                self._read = self._clock()
            return list(self._records)

    def _healthy(self, record: dict[str, Any]) -> bool:
        if record.get("HealthCheckId"):
            return self.checkers.healthy(str(record["HealthCheckId"]))
        alias = record.get("AliasTarget") or {}
        if alias.get("EvaluateTargetHealth"):
            return self.checkers.lb_healthy(str(alias.get("DNSName", "")))
        return True

    def answer(self) -> tuple[str, int] | None:
        """(target hostname, TTL) of one answer, or None when the name has no record."""
        records = self.records()
        if not records:
            return None
        chosen = records[0] if len(records) == 1 and "Weight" not in records[0] else self._weighted(records)
        alias = chosen.get("AliasTarget")
        target = alias["DNSName"] if alias else chosen["ResourceRecords"][0]["Value"]
        return str(target).lower().rstrip(".").removeprefix("dualstack."), ALIAS_TTL if alias else int(chosen["TTL"])

    def _weighted(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        healthy = [r for r in records if self._healthy(r)]
        if not healthy:
            healthy = records  # every record unhealthy: Route53 treats all as healthy
        nonzero = [r for r in healthy if int(r.get("Weight") or 0) > 0]
        if nonzero:
            return self.rng.choices(nonzero, weights=[int(r["Weight"]) for r in nonzero])[0]
        # All weights 0, or every non-zero record unhealthy: the (healthy) zero-weight records
        # answer, with equal probability.
        return self.rng.choice(healthy)


@dataclass
class Counts:
    buckets: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (second, cluster) -> [ok, failed]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ts: float, cluster: str, ok: bool) -> None:
        with self.lock:
            bucket = self.buckets.setdefault((int(ts), cluster), [0, 0])
            bucket[0 if ok else 1] += 1

    def lines(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"ts": ts, "cluster": c, "ok": v[0], "failed": v[1]} for (ts, c), v in sorted(self.buckets.items())]

    def total(self, *, since: float = 0.0, until: float = float("inf")) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        with self.lock:
            for (ts, c), v in self.buckets.items():
                if since <= ts < until:
                    t = out.setdefault(c, [0, 0])
                    t[0] += v[0]
                    t[1] += v[1]
        return out


class LoadGenerator:
    """Fixed-rate requests to the record from ``clients`` caching clients; counts per cluster per second."""

    def __init__(self, answerer: Answerer, ingresses: dict[str, Ingress], *, rate: float, host: str,
                 path: str = "/productpage", clients: int = 100, max_seconds: float = 600.0,
                 timeout: float = 2.0, wall: Callable[[], float] = time.time) -> None:
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate {rate} is outside (0, {MAX_RATE:g}] requests per second")
        if not 0 < max_seconds <= MAX_SECONDS:
            raise ValueError(f"duration {max_seconds} is outside (0, {MAX_SECONDS:g}] seconds")
        self.answerer, self.ingresses = answerer, ingresses
        self.rate, self.host, self.path, self.timeout = rate, host, path, timeout
        self.max_seconds, self._wall = max_seconds, wall
        self._cache: list[tuple[float, str | None]] = [(float("-inf"), None)] * max(1, clients)
        self._cache_lock = threading.Lock()
        self.counts = Counts()
        self.unresolved = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def _target(self, n: int) -> str | None:
        i = n % len(self._cache)
        now = time.monotonic()
        with self._cache_lock:
            expires, host = self._cache[i]
        if now < expires:
            return host
        answer = self.answerer.answer()
        host, ttl = (answer[0], answer[1]) if answer else (None, 1)
        with self._cache_lock:
            self._cache[i] = (now + ttl, host)
        return host

    def _one(self, n: int) -> None:
        started = self._wall()
        host = self._target(n)
        ingress = self.ingresses.get(host or "")
        if ingress is None:
            self.unresolved += 1
            return
        status = _get(ingress.address, self.path, self.host, self.timeout)
        self.counts.add(started, ingress.cluster, status is not None and 200 <= status < 400)

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="traffic") as pool:
            n = 0
            while not self._stop.is_set():
                due = start + n / self.rate
                if due - start > self.max_seconds:
                    break
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                pool.submit(self._one, n)
                n += 1
                self.sent = n

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def write(self, path: Path) -> None:
        Path(path).write_text("".join(json.dumps(line) + "\n" for line in self.counts.lines()), encoding="utf-8")
