"""``meshops switchover``: fills the params of ``playbooks/switchover.yaml`` and runs it.

Like ``meshops run``, plus two things: the playbook's read-only steps (inputs, ingress, DNS,
health checks, proving the target) run first as a plan, so bad input or an unready target
exits 2 before a run exists or anything is written; and the run holds three locks, taken in
this order before anything changes and released at the end (rollback included):

- the record itself: the TXT record ``_meshops-lock.<record>`` (``drivers/route53_lock.py``),
  so two switchovers of one record exclude each other wherever they run from;
- the Lease in the cluster that takes the traffic (``--to``, or ``--context``), where the
  journal is mirrored;
- the Lease in the cluster that gives it (``--from``), so an upgrade of the source cannot
  run during its switchover.

A lock held elsewhere exits 4 naming the holder; nothing is changed.
``meshops rollback RUN_ID`` moves the traffic back later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meshops.cli import output
from meshops.cli.app_light import pass_app
from meshops.domain.errors import BadInput

# The engine, drivers and locks are imported where they are used: `meshops switchover --help` stays light.
if TYPE_CHECKING:
    from meshops.cli.app import App
    from meshops.drivers.route53_lock import RecordLock
    from meshops.engine.lock import BasicLock
    from meshops.engine.playbook import LoadedPlaybook
    from meshops.engine.runner import Engine, PlannedStep

PLAYBOOK = "switchover.yaml"


def playbook_path(explicit: str | None) -> str:
    """``--playbook``, else ``$MESHOPS_PLAYBOOKS/switchover.yaml``, else the one beside the package."""
    if explicit:
        return explicit
    for base in (os.environ.get("MESHOPS_PLAYBOOKS"), str(Path(__file__).resolve().parents[2] / "playbooks")):
        if base and (Path(base) / PLAYBOOK).is_file():
            return str(Path(base) / PLAYBOOK)
    raise BadInput(f"cannot find playbooks/{PLAYBOOK}; pass --playbook PATH or set MESHOPS_PLAYBOOKS")


@click.command()
@click.option("--from", "from_context", required=True, metavar="CONTEXT", help="Cluster that has the traffic.")
@click.option("--to", "to_context", required=True, metavar="CONTEXT", help="Cluster that takes it.")
@click.option("--zone", required=True, help="Hosted zone name (example.com) or ID.")
@click.option("--record", required=True, help="Record to switch (app.example.com).")
@click.option("--steps", default="10,25,50,100", show_default=True, help="Target shares in percent.")
@click.option("--bake", default="5m", show_default=True, help="Minimum hold per step.")
@click.option("--probe", "probes", multiple=True, metavar="URL", help="Probe URL on both clusters (repeatable).")
@click.option("--connect-to", multiple=True, metavar="HOST:PORT:TO_HOST:TO_PORT",
              help="Send probes for an ingress address elsewhere, as curl --connect-to (repeatable).")
@click.option("--expect-text", default=None, help="Text a probe's body must contain.")
@click.option("--probe-interval", default="10s", show_default=True)
@click.option("--probe-timeout", default="5s", show_default=True)
@click.option("--failure-threshold", type=click.IntRange(min=1), default=1, show_default=True,
              help="Failed evaluations in a row that roll back.")
@click.option("--prometheus", metavar="URL", default=None, help="Prometheus for --gate-promql.")
@click.option("--gate-promql", "gates", multiple=True, metavar="EXPR",
              help="PromQL condition that must hold, e.g. 'errors_ratio < 0.01' (repeatable).")
@click.option("--gate-window", default="60s", show_default=True, help="First PromQL evaluation this long after a shift.")
@click.option("--dns-owner", type=click.Choice(["meshops", "external-dns"]), default="meshops", show_default=True)
@click.option("--propagation-allowance", default="60s", show_default=True, help="Added to the TTL in each hold.")
@click.option("--ttl", type=click.IntRange(min=0), default=None, help="Lower the TTL to this first; wait out the old one.")
@click.option("--set-identifiers", default=None, metavar="SOURCE,TARGET", help="Default: the two context names.")
@click.option("--gateway", default="istio-system/istio-ingressgateway", show_default=True, metavar="NS/NAME")
@click.option("--allow-weaker-mtls", is_flag=True, help="Accept a target whose mTLS is weaker than the source's.")
@click.option("--health-check", "health_check", default="auto", show_default=True, metavar="TYPE:PORT:PATH",
              help="Route53 health check for each ingress: auto (HTTP :15021/healthz/ready when the load balancer "
                   "exposes the gateway's status port, else TCP on the serving port), TYPE:PORT[:PATH], or none.")
@click.option("--health-check-interval", type=click.Choice(["10", "30"]), default="30", show_default=True)
@click.option("--lock-ttl", default=None, metavar="DURATION",
              help="How long the locks outlive a run that died (default: record lock 120s, Leases 30s; at least 5s).")
@click.option("--playbook", default=None, type=click.Path(dir_okay=False, exists=True), help="A copy to run instead.")
@click.option("--dry-run", is_flag=True, help="Check everything and show the plan; change nothing.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_app
def switchover(app: App, from_context: str, to_context: str, zone: str, record: str, steps: str, bake: str,
               probes: tuple[str, ...], connect_to: tuple[str, ...], expect_text: str | None, probe_interval: str,
               probe_timeout: str, failure_threshold: int, prometheus: str | None, gates: tuple[str, ...],
               gate_window: str, dns_owner: str, propagation_allowance: str, ttl: int | None,
               set_identifiers: str | None, gateway: str, allow_weaker_mtls: bool, health_check: str,
               health_check_interval: str, lock_ttl: str | None, playbook: str | None, dry_run: bool,
               assume_yes: bool) -> None:
    """Move live traffic from --from to --to with Route53 weighted records, step by step.

    Exit 0 when done; 1 when a probe or gate failed and the traffic went back; 2 on bad
    input, nothing changed. Prints the run id; `meshops rollback RUN_ID` moves it back later.
    """
    from meshops.cli.app import stop_on_signals
    from meshops.cli.run_cmds import _print_plan
    from meshops.domain.weights import parse_steps
    from meshops.engine.playbook import load_playbook, resolve_params
    from meshops.engine.runner import Engine

    if from_context == to_context:
        raise BadInput(f"--from and --to are both {from_context!r}: a switchover needs two clusters")
    given: dict[str, Any] = {
        "from_context": from_context, "to_context": to_context, "zone": zone, "record": record,
        "steps": list(parse_steps(steps)), "bake": bake, "probes": list(probes), "connect_to": list(connect_to),
        "expect_text": expect_text, "probe_interval": probe_interval, "probe_timeout": probe_timeout,
        "failure_threshold": failure_threshold, "prometheus": prometheus, "gates": list(gates),
        "gate_window": gate_window, "dns_owner": dns_owner, "propagation_allowance": propagation_allowance,
        "ttl": ttl, "allow_weaker_mtls": allow_weaker_mtls, "health_check_interval": int(health_check_interval),
        "lock_ttl": lock_ttl,
    }
    given.update(_gateway(gateway))
    given.update(_health_check(health_check))
    if set_identifiers:
        ids = [s.strip() for s in set_identifiers.split(",")]
        if len(ids) != 2 or not all(ids) or ids[0] == ids[1]:
            raise BadInput("--set-identifiers needs two different names: SOURCE,TARGET")
        given.update(source_id=ids[0], target_id=ids[1])
    loaded = load_playbook(playbook_path(playbook))
    params = resolve_params(loaded.playbook, {k: v for k, v in given.items() if v is not None})
    # The run locks, and keeps its journal in, the cluster that takes the traffic.
    app.kube_context = app.kube_context or to_context
    fmt = output.fmt_of()
    output.run_command(fmt)
    from meshops.cli import idempotent

    planned = preflight(Engine(store=app.store(cluster=False), drivers=app.drivers), loaded, params,
                        show=dry_run and fmt == "table")
    idempotent.refuse_if_unfinished(app, (loaded.playbook.metadata.name,))
    from meshops.cli import dry_run_checks

    # The zone was read by the plan; who AWS thinks we are is asked once, before any change.
    from meshops.drivers.live import LiveDrivers

    # Asked through the session Route53 and ELB already use: its credentials are resolved once.
    aws = app.drivers.aws_session() if isinstance(app.drivers, LiveDrivers) else None
    dry_run_checks.require(dry_run_checks.check_aws_identity(app.driver_settings(), aws), "the switchover")
    done = idempotent.switchover_done(planned, to_context)
    if done is not None:
        output.notice(done, event="switchover.nothing_to_do")
        output.finish(fmt, run_id=None, status="nothing_to_do", summary=done, table=done)
        return
    if dry_run:
        if fmt != "table":
            _print_plan(planned, fmt)
        return
    output.confirm_change(f"move the traffic of {record} from {from_context} to {to_context} in steps {steps}",
                          assume_yes=assume_yes)
    with stop_on_signals() as stop:
        engine = app.engine(cluster=loaded.playbook.metadata.lock, stop=stop)
        engine.lock = switchover_locks(app, engine, params)
        result = engine.start(loaded, params)
    output.finish(fmt, run_id=result.run_id, status=result.status,
                  summary=result.message or f"traffic of {record} moved from {from_context} to {to_context}",
                  table=result.run_id)


def switchover_locks(app: App, engine: Engine, params: dict[str, Any]) -> AllLocks:
    """The record's lock and both clusters' Leases: taken by the switchover, and by its resume or
    rollback, which so also release what a paused run kept."""
    from meshops.domain.durations import parse_duration
    from meshops.drivers.kube_state import LeaseLock

    # ``lock_ttl`` (journaled with the params, so a resume or rollback keeps it): how long each
    # lock outlives a holder that stopped renewing. Unset, each lock keeps its own default.
    ttl = params.get("lock_ttl")
    seconds = parse_duration(ttl) if ttl is not None else None
    cluster = engine.lock
    if cluster is not None and seconds is not None:
        cluster.duration = seconds
    source = LeaseLock(app.drivers.kube_for(str(params["from_context"])))
    if seconds is not None:
        source.duration = seconds
    return AllLocks([record_lock(app, str(params["zone"]), str(params["record"]), duration=seconds),
                     *([cluster] if cluster else []), source])


class AllLocks:
    """Several run locks as one: taken in order (those taken are given back if a later one is held),
    renewed together, released in reverse order."""

    def __init__(self, locks: list[BasicLock]) -> None:
        self.locks = locks
        self.name = " + ".join(lock.name for lock in locks)
        self.duration = min(lock.duration for lock in locks)

    # Fencing and paused runs (issue 15): locks that can look at their holder, or keep a paused
    # mark, do; the others (the Route53 record lock) are renewed or given back as before.
    def verify(self) -> None:
        for lock in self.locks:
            verify = getattr(lock, "verify", None)
            if verify is not None:
                verify()

    def pause(self, run_id: str) -> None:
        for lock in reversed(self.locks):
            pause = getattr(lock, "pause", None)
            if pause is not None:
                pause(run_id)
            else:
                lock.release()

    def abandon(self, run_id: str) -> bool:
        from meshops.engine.lock import RunLock

        found = [lock.abandon(run_id) for lock in self.locks if isinstance(lock, RunLock)]
        return any(found)

    def acquire(self, holder: str) -> None:
        taken: list[BasicLock] = []
        try:
            for lock in self.locks:
                lock.acquire(holder)
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise

    def renew(self) -> None:
        errors = []
        for lock in self.locks:
            try:
                lock.renew()
            except Exception as exc:  # one missed renewal must not skip the others
                errors.append(exc)
        if errors:
            raise errors[0]

    def release(self) -> None:
        # Independent locks in independent systems: given back at once, each whatever the others do.
        from concurrent.futures import ThreadPoolExecutor

        import structlog

        with ThreadPoolExecutor(max_workers=len(self.locks), thread_name_prefix="unlock") as pool:
            futures = [(lock, pool.submit(lock.release)) for lock in reversed(self.locks)]
        for lock, future in futures:
            error = future.exception()
            if error is not None:
                # The run's outcome stands; a lock not given back expires on its own (Lease: 30 s,
                # record lock: 120 s, or --lock-ttl) and is taken over then.
                structlog.get_logger().warning("lock.release_failed", lock=lock.name, error=str(error))


def record_lock(app: App, zone: str, record: str, *, duration: float | None = None) -> RecordLock:
    """The TXT lock of ``record`` in ``zone``, through the run's Route53 driver (one rate limit)."""
    from meshops.drivers.route53_lock import RecordLock

    r53 = app.drivers.route53()
    found = r53.find_zone(zone)
    name = record if "." in record.rstrip(".") else f"{record}.{found.name}"
    return RecordLock(r53, found.id, name) if duration is None else RecordLock(r53, found.id, name, duration=duration)


def preflight(engine: Engine, loaded: LoadedPlaybook, params: dict[str, Any], *, show: bool = False) -> list[PlannedStep]:
    """The engine's preflight, with the plan shown when asked for or when it refuses (exit 2)."""
    from meshops.cli.run_cmds import _print_plan
    from meshops.engine.plan_refusal import PlanRefused, refuse_if_any_step_would_fail

    try:
        planned = refuse_if_any_step_would_fail(engine, loaded, params)
    except PlanRefused as exc:
        _print_plan(exc.planned, "text")
        raise
    if show:
        _print_plan(planned, "text")
    return planned


def _gateway(text: str) -> dict[str, str]:
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name:
        raise BadInput(f"--gateway {text!r}: expected NAMESPACE/NAME")
    return {"gateway_namespace": ns, "gateway_service": name}


def _health_check(text: str) -> dict[str, Any]:
    if text.lower() == "none":
        return {"health_checks": False}
    if text.lower() == "auto":
        return {"health_checks": True, "health_check_type": "AUTO"}
    parts = text.split(":", 2)
    if len(parts) < 2 or parts[0].upper() not in ("HTTP", "HTTPS", "TCP") or not parts[1].isdigit():
        raise BadInput(f"--health-check {text!r}: expected TYPE:PORT[:PATH] (HTTP, HTTPS or TCP) or none")
    out: dict[str, Any] = {"health_checks": True, "health_check_type": parts[0].upper(),
                           "health_check_port": int(parts[1])}
    if len(parts) == 3 and parts[2]:
        out["health_check_path"] = parts[2]
    return out
