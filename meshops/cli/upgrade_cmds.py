"""``meshops upgrade`` (canary or guarded in-place), ``meshops upgrade finalize``, ``meshops status``.

The commands fill the params of ``playbooks/canary-upgrade.yaml`` or
``playbooks/inplace-upgrade.yaml`` and run them exactly as ``meshops run`` would. First the
playbook's read-only steps (discover, check) run as a plan: bad input, an impossible
upgrade or a missing istioctl exits 2 before a run exists or anything is written; another
run holding the lock exits 4.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import click

from meshops.cli.app import App, stop_on_signals
from meshops.cli.app_light import pass_app
from meshops.cli.install_cmds import playbook_path
from meshops.cli.switchover_cmds import preflight
from meshops.domain.durations import format_duration, parse_duration
from meshops.domain.errors import BadInput
from meshops.engine.journal import RunState
from meshops.engine.playbook import LoadedPlaybook, load_playbook, load_playbook_text, resolve_params
from meshops.engine.runner import Engine

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


def _with_on_failure(loaded: LoadedPlaybook, on_failure: str) -> LoadedPlaybook:
    """The playbook with the waves' on_failure set (rollback or freeze): a playbook field, not a param."""
    if on_failure == "rollback":
        return loaded
    import yaml

    doc = yaml.safe_load(loaded.source.text)
    for step in doc.get("steps") or []:
        if step.get("uses") in ("istio.move_wave", "istio.gateways"):
            step["on_failure"] = on_failure
    return load_playbook_text(yaml.safe_dump(doc, sort_keys=False), path=loaded.path)


def _start(app: App, loaded: LoadedPlaybook, params: dict[str, Any], *, assume_yes: bool, dry_run: bool) -> RunState | None:
    planned = preflight(Engine(store=app.store(cluster=False), drivers=app.drivers), loaded, params, show=dry_run)
    check = next((p for p in planned if p.step_id == "check" and not p.skipped), None)
    if check is not None:
        sizes = [len(p.inputs["wave"]["namespaces"]) for p in planned
                 if p.step_id.startswith("waves[") and isinstance(p.inputs.get("wave"), dict)]
        click.echo(f"meshops: plan checked ({len(sizes)} wave(s) of {_sizes_text(sizes)} namespace(s)); "
                   "nothing changed yet", err=True)
    if dry_run:
        return None
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


def _wave_index(key: str) -> int:
    """``waves[10]`` -> 10 (so waves sort by number, not as text); other keys -> -1."""
    return int(key[6:-1]) if key.startswith("waves[") and key.endswith("]") else -1


def _report(state: RunState, soak: str) -> None:
    out = {k: (s.outputs or {}) for k, s in state.steps.items()}
    check = out.get("check", {})
    if check:
        click.echo(f"upgraded {check.get('from_revision')} ({check.get('from_version')}) -> "
                   f"{check.get('to_revision')} ({check.get('to_version')})")
    moved = [w for key, o in out.items() if key.startswith("waves[") for w in o.get("restarted", [])]
    if check:
        sizes = [len(o.get("namespaces") or []) for k, o in sorted(out.items(), key=lambda kv: _wave_index(kv[0]))
                 if k.startswith("waves[")]
        click.echo(f"  {len(moved)} workload(s) restarted in {len(sizes)} wave(s) of {_sizes_text(sizes)} "
                   "namespace(s)")
    for _, o in sorted(out.items()):
        for w, why in (o.get("not_moved") or {}).items():
            click.echo(f"  not moved: {w}: {why}")
    holding = sorted({p for key, o in out.items() if key.startswith("waves[") for p in o.get("holding_old", [])})
    if holding:
        click.echo(f"  still on the old proxy (meshops does not restart these): {', '.join(holding)}")
    fin = out.get("finalize")
    if fin:
        click.echo(f"  {fin.get('message')}")
    elif check and state.steps.get("finalize") is not None:
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((state.finished or time.time()) + parse_duration(soak)))
        click.echo(f"  soaking: the old revision stays until `meshops upgrade finalize {state.run_id}` "
                   f"(after {until})")
    click.echo(state.run_id)


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
    state = run_upgrade(app, strategy, given, playbook=playbook, on_failure=on_failure, assume_yes=assume_yes,
                        dry_run=dry_run)
    if state is not None:
        _report(state, soak)


def run_upgrade(app: App, strategy: str, given: dict[str, Any], *, playbook: str | None = None,
                on_failure: str = "rollback", assume_yes: bool = False, dry_run: bool = False) -> RunState | None:
    """Fill the strategy's playbook with ``given`` params and run it (after its read-only preflight)."""
    if strategy == "canary":
        given = {**given, "finalize_now": parse_duration(given.get("soak") or 0) == 0}
    loaded = _with_on_failure(load_playbook(playbook or playbook_path(PLAYBOOKS[strategy])), on_failure)
    params = resolve_params(loaded.playbook, given)
    return _start(app, loaded, params, assume_yes=assume_yes, dry_run=dry_run)


@upgrade.command("finalize")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Uninstall even if pods still use the old revision, or before the soak ends.")
@click.option("--playbook", default=None, type=click.Path(dir_okay=False, exists=True))
@pass_app
def finalize(app: App, run_id: str, force: bool, playbook: str | None) -> None:
    """Finish RUN_ID's canary upgrade: default tag and validator to the new revision, old one removed."""
    click.echo(finalize_run(app, run_id, force=force, playbook=playbook))


def finalize_run(app: App, run_id: str, *, force: bool = False, playbook: str | None = None) -> str:
    store = app.store(cluster=app.cluster_configured() and not app.store(cluster=False).exists(run_id))
    state = RunState.replay(run_id, store.records(run_id))
    check = (state.steps.get("check") or _none()).outputs or {}
    if state.playbook_name != "canary-upgrade" or not check:
        raise BadInput(f"run {run_id} is not a canary upgrade that got past its checks")
    if state.status != "succeeded":
        raise BadInput(f"run {run_id} is {state.status}: finish it first (meshops resume {run_id})")
    done = (state.steps.get("finalize") or _none()).outputs or {}
    if done.get("complete"):
        return f"{run_id}: already finalized ({done.get('message')})"
    soak = parse_duration(str(state.params.get("soak") or 0))
    left = (state.finished or 0) + soak - time.time()
    if left > 0 and not force:
        raise BadInput(f"run {run_id} soaks for another {format_duration(left)}; finalize after that, or pass --force")
    loaded = load_playbook(playbook or playbook_path(PLAYBOOKS["canary"]))
    p = state.params
    params = resolve_params(loaded.playbook, {
        "to": check["to_version"], "phase": "finalize", "old_revision": check["from_revision"],
        "new_revision": check["to_revision"], "istioctl": p.get("istioctl", ""), "mode": p.get("mode", "tags"),
        "stable_tag": p.get("stable_tag", "prod-stable"), "force": force,
        "policy_before": check.get("policy_before") or {}})
    new_state = _start(app, loaded, params, assume_yes=False, dry_run=False)
    assert new_state is not None
    fin = (new_state.steps.get("finalize") or _none()).outputs or {}
    return f"{fin.get('message', new_state.status)}\n{new_state.run_id}"


def _none() -> Any:
    from meshops.engine.journal import StepState

    return StepState(key="-")


@click.command()
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@pass_app
def status(app: App, output: str) -> None:
    """The mesh: revisions, tags, default revision, namespaces, proxies, webhooks, gateways, runs."""
    from meshops.cli.upgrade_status import collect_status, render_status

    data = collect_status(app)
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False))
    else:
        click.echo(render_status(data))
