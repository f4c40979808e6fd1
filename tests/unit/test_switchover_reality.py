"""Switchover pieces that follow real AWS and Istio: health-check discovery, the record lock, lost
answers, MESHOPS_CONNECT_TO, DIR/env quoting, and the sandbox's Route53 answer rules."""

from __future__ import annotations

import random
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import BadInput, LockHeld, PermanentStepError, PreconditionFailed
from meshops.domain.weights import Change, ChangeBatch, RecordSet
from meshops.drivers.http_probe import HttpProber, connect_to_from_environment
from meshops.drivers.route53_fake import FakeRoute53
from meshops.drivers.route53_lock import LockValue, RecordLock, lock_name
from meshops.ops.switchover_common import send
from meshops.sandbox.runtime import shell_quote
from meshops.sandbox.traffic import Answerer
from meshops.steps.switchover_health import discover
from tests.support.fakeclock import FakeClock
from tests.support.switchover import GATEWAY_PORTS

NLB = {"kind": "network", "canonical_zone_id": "Z26RNL4JYFTOTI", "listener_ports": [80, 443, 15021]}


# ---- health checks that mean "this gateway serves" -------------------------------------------------


def test_status_port_on_the_load_balancer_gives_an_http_readiness_check() -> None:
    assert discover(GATEWAY_PORTS, NLB)[:3] == ("HTTP", 15021, "/healthz/ready")
    assert discover(GATEWAY_PORTS, None)[:3] == ("HTTP", 15021, "/healthz/ready")  # not an AWS LB: the Service


def test_no_status_port_listener_falls_back_to_tcp_on_the_serving_port() -> None:
    classic_without_status = {"kind": "classic", "canonical_zone_id": "Z35SXDOTRQ7X7K", "listener_ports": [80, 443]}
    assert discover(GATEWAY_PORTS, classic_without_status)[:2] == ("TCP", 80)
    https_only = [{"name": "https", "port": 443}]
    assert discover(https_only, None)[:2] == ("TCP", 443)
    with pytest.raises(PreconditionFailed):
        discover([], None)


# ---- the record lock ------------------------------------------------------------------------------


def _lock(r53: FakeRoute53, zone: str, clock: FakeClock) -> RecordLock:
    return RecordLock(r53, zone, "app.example.com", duration=120, clock=clock)


def test_record_lock_is_exclusive_names_its_holder_and_is_released() -> None:
    clock, r53 = FakeClock(), FakeRoute53()
    zone = r53.add_zone("example.com")
    first, second = _lock(r53, zone, clock), _lock(r53, zone, clock)
    first.acquire("run-1@elsewhere/1")
    with pytest.raises(LockHeld) as held:
        second.acquire("run-2@elsewhere/2")
    assert "run-1@elsewhere/1" in str(held.value) and lock_name("app.example.com") in str(held.value)
    first.release()
    assert r53.list_records(zone, lock_name("app.example.com")) == []
    second.acquire("run-2@elsewhere/2")
    assert "run=run-2" in r53.list_records(zone, lock_name("app.example.com"))[0].values[0]


def test_a_free_record_lock_costs_one_request_a_held_one_two() -> None:
    """The CREATE goes first (Route53 refuses it if the record exists); only a refused one reads the holder."""
    clock, r53 = FakeClock(), FakeRoute53()
    zone = r53.add_zone("example.com")
    first, second = _lock(r53, zone, clock), _lock(r53, zone, clock)
    before = r53.requests
    first.acquire("run-1@elsewhere/1")
    assert r53.requests - before == 1
    before = r53.requests
    with pytest.raises(LockHeld):
        second.acquire("run-2@elsewhere/2")
    assert r53.requests - before == 2  # the refused CREATE, then the read that names the holder


def test_a_record_lock_release_answered_500_is_sent_again_not_left_behind() -> None:
    """A 500 on the release (not applied: the lock still ours) is sent again; the chaos suite's
    switchovers left a finished run's lock for its whole expiry after one transient 500. A 500 on
    the acquire is sent again the same way."""
    clock, r53 = FakeClock(), FakeRoute53()
    zone = r53.add_zone("example.com")
    lock = _lock(r53, zone, clock)
    r53.fail_next_changes_unapplied(1)
    lock.acquire("run-1@elsewhere/1")
    assert "run=run-1" in r53.list_records(zone, lock_name("app.example.com"))[0].values[0]
    r53.fail_next_changes_unapplied(2)
    lock.release()
    assert r53.list_records(zone, lock_name("app.example.com")) == []


def test_a_stale_record_lock_is_taken_over_only_after_its_expiry() -> None:
    """A killed run (on another machine) leaves its lock: refused until it expires, then taken over."""
    clock, r53 = FakeClock(), FakeRoute53()
    zone = r53.add_zone("example.com")
    killed = LockValue(run_id="run-1", holder="run-1@other-host/7", since="t", expires=int(clock() + 30))
    r53.put(zone, RecordSet(name=lock_name("app.example.com"), type="TXT", ttl=60, values=(killed.text(),)))
    with pytest.raises(LockHeld):
        _lock(r53, zone, clock).acquire("run-2@here/2")
    clock.sleep(31)
    later = _lock(r53, zone, clock)
    later.acquire("run-2@here/2")
    batch = r53.batches[-1][1]["Changes"]
    assert [c["Action"] for c in batch] == ["DELETE", "CREATE"]  # one compare-and-swap batch
    later.release()


def test_two_takeovers_of_one_stale_lock_cannot_both_win() -> None:
    clock, r53 = FakeClock(), FakeRoute53()
    zone = r53.add_zone("example.com")
    stale = RecordSet(name=lock_name("app.example.com"), type="TXT", ttl=60, values=(
        LockValue(run_id="r0", holder="r0@x/1", since="t", expires=int(clock() - 1)).text(),))
    r53.put(zone, stale)
    a, b = _lock(r53, zone, clock), _lock(r53, zone, clock)
    a.acquire("ra@x/2")
    # b read the stale value before a swapped it: its DELETE of that value no longer matches.
    assert b._swap(stale, b._record(LockValue(run_id="rb", holder="rb@x/3", since="t", expires=0))) is False
    with pytest.raises(LockHeld):
        b.acquire("rb@x/3")


# ---- retries that cannot double-apply -----------------------------------------------------------------


class _Ctx:
    def __init__(self, clock: FakeClock) -> None:
        import structlog

        self.clock, self.sleep, self.log = clock, clock.sleep, structlog.get_logger()


def test_a_change_whose_answer_was_lost_is_read_back_not_sent_again() -> None:
    """CREATE + DELETE (not idempotent): applied, answer lost -> read back, found applied, not resent."""
    clock = FakeClock()
    r53 = FakeRoute53(clock=clock)
    zone = r53.add_zone("example.com")
    simple = RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=("blue.lb.",))
    r53.put(zone, simple)
    pair = [RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=(v,), set_identifier=i, weight=w)
            for v, i, w in (("blue.lb.", "blue", 100), ("green.lb.", "green", 0))]
    batch = ChangeBatch(changes=(Change(action="DELETE", record=simple), *[Change(action="CREATE", record=r) for r in pair]))
    r53.lose_next_answers(1)
    send(r53, zone, batch, [simple], _Ctx(clock), timeout=60)  # type: ignore[arg-type]
    assert len(r53.batches) == 1 and sorted(r53.records(zone), key=lambda r: str(r.set_identifier)) == pair


def test_a_lost_answer_of_a_change_that_did_not_apply_is_sent_again_and_a_stranger_stops_it() -> None:
    clock = FakeClock()
    r53 = FakeRoute53(clock=clock)
    zone = r53.add_zone("example.com")
    a = RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=("blue.lb.",))
    r53.put(zone, a)
    b = RecordSet(name="app.example.com.", type="CNAME", ttl=30, values=("blue.lb.",))
    upsert = ChangeBatch(changes=(Change(action="UPSERT", record=b),))

    class Forgetful(FakeRoute53):
        """Loses the request before it applies (the first time), or lets someone else change the record."""

        stranger = False

        def change(self, zone_id: str, batch: ChangeBatch, *, current: Any) -> Any:
            from meshops.drivers.route53 import ChangeOutcomeUnknown

            if not self.batches:
                self.batches.append((zone_id, batch.to_aws()))
                if self.stranger:
                    self.put(zone_id, RecordSet(name="app.example.com.", type="CNAME", ttl=5, values=("x.",)))
                raise ChangeOutcomeUnknown("lost")
            return super().change(zone_id, batch, current=current)

    f = Forgetful(clock=clock)
    fz = f.add_zone("example.com")
    f.put(fz, a)
    send(f, fz, upsert, [a], _Ctx(clock), timeout=60)  # type: ignore[arg-type]
    assert len(f.batches) == 2 and f.records(fz) == [b]
    g = Forgetful(clock=clock)
    g.stranger = True
    gz = g.add_zone("example.com")
    g.put(gz, a)
    with pytest.raises(PermanentStepError, match="someone else"):
        send(g, gz, upsert, [a], _Ctx(clock), timeout=60)  # type: ignore[arg-type]


# ---- reaching load balancer names that do not resolve -----------------------------------------------


def test_meshops_connect_to_sends_a_probe_of_an_unresolvable_name_to_its_mapped_address() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = self.headers.get("Host", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        mapping = connect_to_from_environment({"MESHOPS_CONNECT_TO": f"lb-1.elb.invalid:80:127.0.0.1:{port}, "
                                                                     f"lb-1.elb.invalid:15021:127.0.0.1:{port}"})
        prober = HttpProber(connect_to=mapping)
        assert prober.probe("http://lb-1.elb.invalid:15021/healthz/ready").ok
        via = prober.probe("http://app.example.com/", connect_to="lb-1.elb.invalid:80", expect_text="app.example.com")
        assert via.ok and via.address == f"127.0.0.1:{port}"
        assert not HttpProber(connect_to={}).probe("http://lb-1.elb.invalid/", timeout=1).ok
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(BadInput, match="MESHOPS_CONNECT_TO"):
        connect_to_from_environment({"MESHOPS_CONNECT_TO": "lb:80:127.0.0.1"})


def test_env_file_values_cannot_inject_into_the_shell_that_sources_them(tmp_path: Path) -> None:
    """A --dir like /tmp/$(touch pwned) stays a name; only a trailing :$PATH expands."""
    evil = str(tmp_path / "$(touch pwned)`touch pwned2`\"; touch pwned3; \"\\")
    env = tmp_path / "env"
    env.write_text(f"export A={shell_quote(evil)}\nexport PATH={shell_quote(evil + '/bin:$PATH')}\n")
    out = subprocess.run(["bash", "-c", f'source "{env}" && printf "%s\\n%s" "$A" "$PATH"'], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    a, path = out.stdout.split("\n", 1)
    assert a == evil and path.startswith(evil + "/bin:") and len(path) > len(evil) + 5
    assert not any((tmp_path / p).exists() for p in ("pwned", "pwned2", "pwned3"))


# ---- the sandbox's Route53 answer rules ------------------------------------------------------------------


class _Records:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.data = records

    def list_resource_record_sets(self, **_: Any) -> dict[str, Any]:
        return {"ResourceRecordSets": self.data}


class _Health:
    def __init__(self, unhealthy: set[str]) -> None:
        self.unhealthy = unhealthy

    def healthy(self, check_id: str) -> bool:
        return check_id not in self.unhealthy

    def lb_healthy(self, hostname: str) -> bool:
        return True


def _weighted(ident: str, weight: int, check: str | None = None) -> dict[str, Any]:
    out = {"Name": "app.example.com.", "Type": "CNAME", "TTL": 1, "SetIdentifier": ident, "Weight": weight,
           "ResourceRecords": [{"Value": f"{ident}.lb"}]}
    if check:
        out["HealthCheckId"] = check
    return out


def _answers(records: list[dict[str, Any]], unhealthy: set[str] = frozenset(), n: int = 4000) -> dict[str, float]:  # type: ignore[assignment]
    answerer = Answerer(_Records(records), "Z", "app.example.com", _Health(unhealthy), rng=random.Random(1))  # type: ignore[arg-type]
    seen: dict[str, int] = {}
    for _ in range(n):
        host = answerer.answer()[0]  # type: ignore[index]
        seen[host] = seen.get(host, 0) + 1
    return {h: round(c / n, 2) for h, c in sorted(seen.items())}


def test_route53_answer_rules_weights_zero_weights_and_health() -> None:
    assert _answers([_weighted("blue", 75), _weighted("green", 25)]) == {"blue.lb": 0.75, "green.lb": 0.25}
    assert _answers([_weighted("blue", 100), _weighted("green", 0)]) == {"blue.lb": 1.0}
    assert _answers([_weighted("blue", 0), _weighted("green", 0)]) == {"blue.lb": 0.5, "green.lb": 0.5}  # all zero
    # An unhealthy non-zero record drops out; a zero-weight one answers only when every non-zero is unhealthy.
    assert _answers([_weighted("blue", 100, "hb"), _weighted("green", 0, "hg")], {"hb"}) == {"green.lb": 1.0}
    assert _answers([_weighted("blue", 90, "hb"), _weighted("green", 10, "hg")], {"hb"}) == {"green.lb": 1.0}
    # Every record unhealthy: all are treated as healthy.
    assert _answers([_weighted("blue", 75, "hb"), _weighted("green", 25, "hg")], {"hb", "hg"}) \
        == {"blue.lb": 0.75, "green.lb": 0.25}


def test_undo_retires_a_health_check_reference_whose_create_may_still_land() -> None:
    """Found by `bench/chaos.py --kind switchover --seed 33` (run 49): killed between sending a
    CreateHealthCheck and its answer, the create landed after the rollback had listed and deleted
    the run's checks, and was left behind. The undo now claims each of the run's references it did
    not see and deletes it, so Route53 refuses the late create (a deleted check's reference)."""
    from types import SimpleNamespace

    import structlog

    from meshops.drivers.route53 import HealthCheckSpec
    from meshops.drivers.route53_fake import FakeAwsError
    from meshops.steps.switchover_dns import PrepareDns, PrepareInputs, _caller_reference

    r53 = FakeRoute53(clock=FakeClock())
    zone = r53.add_zone("example.com")
    pair = [RecordSet(name="app.example.com.", type="CNAME", ttl=60, values=(v,), set_identifier=i, weight=w)
            for v, i, w in (("blue.lb.", "blue", 100), ("green.lb.", "green", 0))]
    spec = {"type": "HTTP", "fqdn": "green.lb", "port": 15021, "path": "/healthz/ready", "interval": 10, "threshold": 3}
    inputs = PrepareInputs(zone_id=zone, name="app.example.com.", type="CNAME", original=[], pair=[r.to_aws() for r in pair],
                           source_ingress="blue", target_ingress="green",
                           health_check_specs={"source": {**spec, "fqdn": "blue.lb"}, "target": spec})
    ctx = SimpleNamespace(run_id="r-49", log=structlog.get_logger())
    blue = r53.create_health_check(_caller_reference("r-49", "blue"), HealthCheckSpec(**{**spec, "fqdn": "blue.lb"}), tags={})
    claimed = PrepareDns._claimed(r53, inputs, ctx)  # type: ignore[arg-type]
    assert blue.id in claimed and len(claimed) == 2  # blue as listed; green claimed while its create is in flight
    for hc in claimed:
        r53.delete_health_check(hc)
    with pytest.raises(FakeAwsError, match="HealthCheckAlreadyExists"):  # the create that was in flight lands now
        r53.create_health_check(_caller_reference("r-49", "green"), HealthCheckSpec(**spec), tags={})
    assert r53.list_health_checks() == []
    # Undo again: the references stay retired.
    assert PrepareDns._claimed(r53, inputs, ctx) == []  # type: ignore[arg-type]
