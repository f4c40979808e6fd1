"""``meshops upgrade`` (canary or guarded in-place), ``meshops upgrade finalize``, ``meshops status``.

The commands fill the params of ``playbooks/canary-upgrade.yaml`` or
``playbooks/inplace-upgrade.yaml`` and run them exactly as ``meshops run`` would. First the
playbook's read-only steps (discover, check) run as a plan: bad input, an impossible
upgrade or a missing istioctl exits 2 before a run exists or anything is written; another
run holding the lock exits 4.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, TypeVar

import click

from meshops.cli import output
from meshops.cli.app_light import pass_app
from meshops.domain.durations import format_duration, parse_duration
from meshops.domain.errors import BadInput

if TYPE_CHECKING:
    from meshops.cli.app import App
    from meshops.engine.journal import RunState
    from meshops.engine.playbook import LoadedPlaybook

if TYPE_CHECKING:
    from meshops.steps.base import StepOutputs
    from meshops.steps.istio_waves import WaveOutputs

# Step modules are imported where their Outputs are read, not when the CLI starts.
OutT = TypeVar("OutT", bound="StepOutputs")

PLAYBOOKS = {"canary": "canary-upgrade.yaml", "inplace": "inplace-upgrade.yaml"}
# Istio's standard metrics, scoped to the wave's namespaces ({namespaces} is filled per wave).
ERROR_RATE_GATE = ('(sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace=~"{{namespaces}}",'
           'response_code=~"5.."}}[1m])) or vector(0)) <= {rate} * (sum(rate(istio_requests_total{{'
           'reporter="destination",destination_workload_namespace=~"{{namespaces}}"}}[1m])) or vector(0))')
P99_GATE = ('(histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{'
        'reporter="destination",destination_workload_namespace=~"{{namespaces}}"}}[1m]))) or vector(0)) < {ms}')


def _duration(text: str, flag: str) -> str:
    try:
        parse_duration(text)
    except ValueError as exc:
        raise BadInput(f"{flag}: {exc}") from None
    return text


def _csv(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _wave_params(wave_size: int | None, growth: float | None, max_wave_size: int | None, order: str) -> dict[str, Any]:
    """The wave options as playbook params: equal waves (``--wave-size``) or growing ones, not both."""
    if wave_size is not None and (growth is not None or max_wave_size is not None):
        given = " and ".join(f for f, v in (("--growth", growth), ("--max-wave-size", max_wave_size)) if v is not None)
        raise BadInput(f"--wave-size keeps equal waves; {given} shape growing ones: give one or the other")
    if growth is not None and not math.isfinite(growth):
        raise BadInput(f"--growth {growth}: expected a finite number of at least 1")
    return {"wave_size": wave_size or 0, "growth": 2.0 if growth is None else growth,
            "max_wave_size": max_wave_size or 0, "order": order}


def _start(app: App, loaded: LoadedPlaybook, params: dict[str, Any], *, assume_yes: bool, dry_run: bool,
           confirm: bool = True) -> RunState | None:
    from meshops.cli.app import stop_on_signals
    from meshops.cli.switchover_cmds import preflight
    from meshops.engine.journal import RunState
    from meshops.engine.runner import Engine

    planned = preflight(Engine(store=app.store(cluster=False), drivers=app.drivers), loaded, params, show=dry_run)
    check = next((p for p in planned if p.step_id == "check" and not p.skipped), None)
    if check is not None:
        from meshops.cli import dry_run_checks

        # Prometheus, each gate once, each probe: what the waves will need, before the first change.
        dry_run_checks.upgrade(app.drivers, params)
        sizes = [len(p.inputs["wave"]["namespaces"]) for p in planned
                 if p.step_id.startswith("waves[") and isinstance(p.inputs.get("wave"), dict)]
        output.notice(f"plan checked ({len(sizes)} wave(s) of {_sizes_text(sizes)} namespace(s)); "
                      "nothing changed yet", event="upgrade.plan_checked")
    if dry_run:
        return None
    output.confirm_change(f"{loaded.playbook.metadata.name} to Istio {params.get('to')} on context "
                          f"{app.kube_context or 'current'}", assume_yes=assume_yes or not confirm)
    with stop_on_signals() as stop:
        engine = app.engine(cluster=True, assume_yes=assume_yes, stop=stop)
        result = engine.start(loaded, params)
    return RunState.replay(result.run_id, engine.store.records(result.run_id))


def _sizes_text(sizes: list[int]) -> str:
    """Wave sizes, runs of equal ones counted: ``1, 2, 4, 8`` or ``10 (x20)``."""
    runs: list[list[int]] = []
    for n in sizes:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return ", ".join(f"{n} (x{k})" if k > 2 else ", ".join([str(n)] * k) for n, k in runs)


def outputs_of(state: RunState, key: str, model: type[OutT]) -> OutT | None:
    """A finished step's outputs, read through its typed model (None: the step did not finish)."""
    step = state.steps.get(key)
    return model.model_validate(step.outputs) if step is not None and step.outputs else None


def waves_of(state: RunState) -> list[WaveOutputs]:
    """The finished waves' outputs, in wave order (``waves[10]`` after ``waves[9]``)."""
    from meshops.steps.istio_waves import WaveOutputs

    keys = sorted((k for k in state.steps if k.startswith("waves[") and k.endswith("]")), key=lambda k: int(k[6:-1]))
    return [w for key in keys for w in [outputs_of(state, key, WaveOutputs)] if w is not None]


def _report(state: RunState, soak: str, fmt: str = "table") -> None:
    from meshops.steps.istio_finalize import FinalizeOutputs
    from meshops.steps.istio_precheck import CheckOutputs

    check = outputs_of(state, "check", CheckOutputs)
    waves = waves_of(state)
    restarted = sum(len(w.restarted) for w in waves)
    lines: list[str] = []
    if check:
        lines.append(f"upgraded {check.from_revision} ({check.from_version}) -> {check.to_revision} "
                     f"({check.to_version})")
        sizes = [len(w.namespaces) for w in waves]
        lines.append(f"  {restarted} workload(s) restarted in {len(sizes)} wave(s) of {_sizes_text(sizes)} "
                     "namespace(s)")
    not_moved = {name: why for w in waves for name, why in w.not_moved.items()}
    lines += [f"  not moved: {w}: {why}" for w, why in not_moved.items()]
    holding = sorted({p for w in waves for p in w.holding_old})
    if holding:
        lines.append(f"  still on the old proxy (meshops does not restart these): {', '.join(holding)}")
    fin = outputs_of(state, "finalize", FinalizeOutputs)
    if fin:
        lines.append(f"  {fin.message}")
    elif check and state.steps.get("finalize") is not None:
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((state.finished or time.time()) + parse_duration(soak)))
        lines.append(f"  soaking: the old revision stays until `meshops upgrade finalize {state.run_id}` "
                     f"(after {until})")
    lines.append(state.run_id)
    summary = lines[0] if check else state.message
    output.finish(fmt, run_id=state.run_id, status=state.status, summary=summary, table="\n".join(lines),
                  from_revision=check.from_revision if check else None,
                  to_revision=check.to_revision if check else None,
                  restarted=restarted, not_moved=not_moved, holding_old=holding)


@click.group(invoke_without_command=True)
@click.option("--strategy", type=click.Choice(["canary", "inplace"]), default="canary", show_default=True)
@click.option("--to", "to_version", metavar="VERSION", help="Target Istio version, e.g. 1.25.2.")
@click.option("--revision", default="", help="Name of the new revision (canary; default 1-25-2 for 1.25.2).")
@click.option("--from-revision", default="", help="Revision to move away from (default: the default revision).")
@click.option("--mode", type=click.Choice(["tags", "relabel"]), default="tags", show_default=True,
              help="Move namespaces by revision tags or by relabelling them.")
@click.option("--first", multiple=True, metavar="NS,...", help="Namespaces moved first, alone (repeatable).")
@click.option("--wave-size", type=click.IntRange(min=1), default=None,
              help="Equal waves of this many namespaces (default: growing waves).")
@click.option("--growth", type=click.FloatRange(min=1), default=None,
              help="Each wave this many times the one before, after --first or the first namespace in order "
                   "[default: 2].")
@click.option("--max-wave-size", type=click.IntRange(min=1), default=None,
              help="Cap on a growing wave, in namespaces [default: all remaining].")
@click.option("--order", type=click.Choice(["size", "name", "risk"]), default="size", show_default=True,
              help="After the meshops.dev/wave and meshops.dev/order labels: smallest first, by name, or "
                   "fewest pods and no StatefulSets first.")
@click.option("--concurrency", type=click.IntRange(min=1), default=20, show_default=True,
              help="Workloads restarting at once.")
@click.option("--wave-timeout", default="10m", show_default=True, help="All pods of a wave ready within this.")
@click.option("--stable-tag", default="prod-stable", show_default=True)
@click.option("--canary-tag", default="prod-canary", show_default=True)
@click.option("--istioctl", "istioctl_path", default="", help="The target version's istioctl.")
@click.option("--gateways", type=click.Choice(["inplace", "canary", "skip"]), default="inplace", show_default=True)
@click.option("--prometheus", default="", metavar="URL", help="Prometheus for the wave gates.")
@click.option("--gate", "gates", multiple=True, metavar="EXPR", help="PromQL condition each wave must hold.")
@click.option("--max-error-rate", type=click.FloatRange(min=0, max=1), default=None,
              help="Gate: 5xx share of requests to the wave's namespaces at most this.")
@click.option("--max-p99-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Gate: p99 latency of requests to the wave's namespaces below this.")
@click.option("--probe", "probes", multiple=True, metavar="URL", help="HTTP probe after each wave (repeatable).")
@click.option("--gate-duration", default="0s", show_default=True, help="How long each wave's gates are watched.")
@click.option("--gate-interval", default="10s", show_default=True)
@click.option("--approve-each-wave", is_flag=True, help="Wait for `meshops approve RUN waves[i]` after each wave.")
@click.option("--soak", default="0s", show_default=True,
              help="Keep the old revision; remove it later with `meshops upgrade finalize RUN_ID`.")
@click.option("--on-failure", type=click.Choice(["rollback", "freeze"]), default="rollback", show_default=True)
@click.option("--protect", multiple=True, default=("prod*",), show_default=True,
              help="Contexts where in-place is refused without --force.")
@click.option("--force", is_flag=True, help="In place on a protected context; finalize despite pods on the old revision.")
@click.option("--qps", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True)
@click.option("--burst", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--profile", "profiles", multiple=True, metavar="NAME|FILE",
              help="Canary: an IstioOperator profile applied over the running revision's settings (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="Canary: a setting applied last (repeatable).")
@click.option("--accept-defaults", "accept_defaults", multiple=True, metavar="FIELD,...",
              help="Canary: fields that cannot be recovered from the cluster may take the target's defaults.")
@click.option("--compatibility-version", default="", metavar="1.X",
              help="Canary: keep that older minor's behaviour defaults (values.compatibilityVersion).")
@click.option("--playbook", default=None, type=click.Path(dir_okay=False, exists=True), help="A copy to run instead.")
@click.option("--dry-run", is_flag=True, help="Check everything and show the plan; change nothing.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Answer yes to approval gates.")
@click.pass_context
def upgrade(cctx: click.Context, strategy: str, to_version: str | None, revision: str, from_revision: str, mode: str,
            first: tuple[str, ...], wave_size: int | None, growth: float | None, max_wave_size: int | None,
            order: str, concurrency: int, wave_timeout: str, stable_tag: str,
            canary_tag: str, istioctl_path: str, gateways: str, prometheus: str, gates: tuple[str, ...],
            max_error_rate: float | None, max_p99_ms: float | None, probes: tuple[str, ...], gate_duration: str,
            gate_interval: str, approve_each_wave: bool, soak: str, on_failure: str, protect: tuple[str, ...],
            force: bool, qps: float, burst: int, profiles: tuple[str, ...], sets: tuple[str, ...],
            accept_defaults: tuple[str, ...], compatibility_version: str, playbook: str | None, dry_run: bool,
            assume_yes: bool) -> None:
    """Upgrade Istio: canary (a new revision beside the old, the data plane moved in gated waves)
    or guarded in-place (one minor at most, refused on protected contexts).

    Exit 0 done (the old revision may stay while pods meshops must not restart hold it: they
    are named); 1 failed and rolled back; 2 bad input, nothing changed; 4 another run holds
    the lock; 130 interrupted or awaiting approval (`meshops resume RUN_ID`).
    """
    if cctx.invoked_subcommand is not None:
        return
    if not to_version:
        raise click.UsageError("--to VERSION is required")
    from meshops.cli.app import app_from

    app = app_from(cctx)
    app.qps, app.burst = qps, burst
    fmt = output.fmt_of()
    output.run_command(fmt)
    exprs = list(gates)
    if max_error_rate is not None:
        exprs.append(ERROR_RATE_GATE.format(rate=max_error_rate))
    if max_p99_ms is not None:
        exprs.append(P99_GATE.format(ms=max_p99_ms))
    given: dict[str, Any] = {
        "to": to_version, "from_revision": from_revision, **_wave_params(wave_size, growth, max_wave_size, order),
        "concurrency": concurrency,
        "wave_timeout": _duration(wave_timeout, "--wave-timeout"), "istioctl": istioctl_path,
        "prometheus": prometheus, "gates": exprs, "probes": list(probes),
        "gate_duration": _duration(gate_duration, "--gate-duration"),
        "gate_interval": _duration(gate_interval, "--gate-interval"), "approve_each_wave": approve_each_wave,
        "force": force, "first": _csv(first),
    }
    if strategy == "canary":
        given.update(revision=revision, mode=mode, stable_tag=stable_tag, canary_tag=canary_tag, gateways=gateways,
                     soak=_duration(soak, "--soak"), profiles=list(profiles), sets=list(sets),
                     accept_defaults=_csv(accept_defaults), compatibility_version=compatibility_version,
                     dry_run=dry_run)
    else:
        if revision:
            raise BadInput("--revision: an in-place upgrade keeps the current revision")
        for flag, value in (("--profile", profiles), ("--set", sets), ("--accept-defaults", accept_defaults),
                            ("--compatibility-version", compatibility_version)):
            if value:
                raise BadInput(f"{flag}: only a canary upgrade installs new settings")
        given.update(protect=list(protect))
        if not force:
            # The guard first: a protected cluster is refused whatever state earlier runs left it in.
            from meshops.domain.identity import protected_by

            kube = app.drivers.kube
            protected = protected_by(protect, kube.context, str(getattr(kube, "server", "") or ""))
            if protected:
                raise BadInput(f"context {kube.context!r} matches --protect {', '.join(protected)}: an in-place "
                               "upgrade is refused there (use --strategy canary, or --force); nothing was changed")
    from meshops.cli import idempotent

    # A scheduled run pinned to a version: after the first success every later one is a no-op.
    idempotent.refuse_if_unfinished(app, ("canary-upgrade", "inplace-upgrade"))
    done = idempotent.upgrade_done(app, to_version)
    if done is not None:
        output.notice(done, event="upgrade.nothing_to_do")
        output.finish(fmt, run_id=None, status="nothing_to_do", summary=done, table=done)
        return
    state = run_upgrade(app, strategy, given, playbook=playbook, on_failure=on_failure, assume_yes=assume_yes,
                        dry_run=dry_run)
    if state is not None:
        _report(state, soak, fmt)


def run_upgrade(app: App, strategy: str, given: dict[str, Any], *, playbook: str | None = None,
                on_failure: str = "rollback", assume_yes: bool = False, dry_run: bool = False) -> RunState | None:
    """Fill the strategy's playbook with ``given`` params and run it (after its read-only preflight)."""
    from meshops.cli.install_cmds import playbook_path
    from meshops.engine.playbook import load_playbook, resolve_params

    if strategy == "canary":
        given = {**given, "finalize_now": parse_duration(given.get("soak") or 0) == 0}
    loaded = load_playbook(playbook or playbook_path(PLAYBOOKS[strategy]))
    if "on_failure" in loaded.playbook.params:
        given = {**given, "on_failure": on_failure}
    elif on_failure != "rollback":
        raise BadInput(f"--on-failure {on_failure}: {loaded.path} has no on_failure param "
                       f"(copy it from {PLAYBOOKS[strategy]})")
    params = resolve_params(loaded.playbook, given)
    return _start(app, loaded, params, assume_yes=assume_yes, dry_run=dry_run)


@upgrade.command("finalize")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Uninstall even if pods still use the old revision, or before the soak ends.")
@click.option("--playbook", default=None, type=click.Path(dir_okay=False, exists=True))
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_app
def finalize(app: App, run_id: str, force: bool, playbook: str | None, assume_yes: bool) -> None:
    """Finish RUN_ID's canary upgrade: default tag and validator to the new revision, old one removed."""
    fmt = output.fmt_of()
    output.run_command(fmt)
    text = finalize_run(app, run_id, force=force, playbook=playbook, assume_yes=assume_yes)
    *message, last = text.splitlines()
    output.finish(fmt, run_id=last if message else run_id, status="succeeded",
                  summary=" ".join(message) or last, table=text)


def finalize_run(app: App, run_id: str, *, force: bool = False, playbook: str | None = None,
                 assume_yes: bool = True) -> str:
    from meshops.cli.install_cmds import playbook_path
    from meshops.engine.journal import RunState
    from meshops.engine.playbook import load_playbook, resolve_params
    from meshops.steps.istio_finalize import FinalizeOutputs
    from meshops.steps.istio_precheck import CheckOutputs

    store = app.store(cluster=app.cluster_configured() and not app.store(cluster=False).exists(run_id))
    state = RunState.replay(run_id, store.records(run_id))
    check = outputs_of(state, "check", CheckOutputs)
    if state.playbook_name != "canary-upgrade" or check is None:
        raise BadInput(f"run {run_id} is not a canary upgrade that got past its checks")
    if state.status != "succeeded":
        raise BadInput(f"run {run_id} is {state.status}: finish it first (meshops resume {run_id})")
    done = outputs_of(state, "finalize", FinalizeOutputs)
    if done is not None and done.complete:
        return f"{run_id}: already finalized ({done.message})"
    soak = parse_duration(str(state.params.get("soak") or 0))
    left = (state.finished or 0) + soak - time.time()
    if left > 0 and not force:
        raise BadInput(f"run {run_id} soaks for another {format_duration(left)}; finalize after that, or pass --force")
    loaded = load_playbook(playbook or playbook_path(PLAYBOOKS["canary"]))
    p = state.params
    params = resolve_params(loaded.playbook, {
        "to": check.to_version, "phase": "finalize", "old_revision": check.from_revision,
        "new_revision": check.to_revision, "istioctl": p.get("istioctl", ""), "mode": p.get("mode", "tags"),
        "stable_tag": p.get("stable_tag", "prod-stable"), "force": force, "policy_before": check.policy_before})
    output.confirm_change(f"finalize run {run_id}: remove revision {check.from_revision}", assume_yes=assume_yes)
    new_state = _start(app, loaded, params, assume_yes=False, dry_run=False, confirm=False)
    assert new_state is not None
    fin = outputs_of(new_state, "finalize", FinalizeOutputs)
    return f"{fin.message if fin else new_state.status}\n{new_state.run_id}"


@click.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, metavar="NS",
              help="Show only these namespaces (repeatable); the mesh-wide parts stay.")
@pass_app
def status(app: App, namespaces: tuple[str, ...]) -> None:
    """The mesh: revisions, tags, default revision, namespaces, proxies, webhooks, gateways, runs."""
    from meshops.cli.upgrade_status import collect_status, render_status

    data = collect_status(app)
    if namespaces:
        wanted = set(namespaces)
        data["namespaces"] = {ns: v for ns, v in data["namespaces"].items() if ns in wanted}
        data["workloads_on_old"] = {rev: [r for r in refs if r.split("/")[1] in wanted]
                                    for rev, refs in data["workloads_on_old"].items()}
        data["workloads_on_old"] = {rev: refs for rev, refs in data["workloads_on_old"].items() if refs}
    output.emit(data, output.fmt_of(), lambda: render_status(data))
