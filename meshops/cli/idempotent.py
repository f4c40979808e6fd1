"""Scheduled runs are idempotent: a run whose goal already holds is exit 0 "nothing to do".

A weekly pipeline pinned to one version runs the same command every week. The first run
does the work; every later one must succeed without touching anything, or the schedule
turns red for a healthy mesh. And a run left half-way (interrupted, frozen, waiting for
approval) must be finished or undone first: starting over it is never right, so the new
run names it with the two commands that deal with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshops.domain.errors import BadInput

if TYPE_CHECKING:
    from meshops.cli.app import App

# Statuses of a run that changed something and did not finish (resume or roll back).
UNFINISHED = ("running", "interrupted", "awaiting_approval", "frozen", "rolling_back", "rollback_failed")


def unfinished_runs(app: App, playbooks: tuple[str, ...]) -> list[dict[str, Any]]:
    """Runs of these playbooks left half-way on this cluster: its own journal (meshops-system), not
    this machine's state dir, which may hold runs against other clusters (one CI runner, many)."""
    from meshops.drivers.kube_state import ConfigMapStateStore
    from meshops.engine.journal import RunState

    found: dict[str, dict[str, Any]] = {}
    stores = [ConfigMapStateStore(app.drivers.kube)] if app.cluster_configured() else [app.store(cluster=False)]
    for store in stores:
        for run_id in store.run_ids():
            if run_id in found:
                continue
            state = RunState.replay(run_id, store.records(run_id))
            if state.playbook_name in playbooks and state.status in UNFINISHED:
                found[run_id] = {"run_id": run_id, "playbook": state.playbook_name, "status": state.status,
                                 "failed_step": state.failed_step}
    return list(found.values())


def _lock_is_live(app: App) -> bool:
    """Whether a live holder has the cluster's run lock: then a `running` run really runs, and the
    engine's own refusal (exit 4, naming the holder) is the right answer, not "half-way"."""
    if not app.cluster_configured():
        return False
    from meshops.steps.istio_discover import lock_holder

    return lock_holder(app.drivers.kube) is not None


def refuse_if_unfinished(app: App, playbooks: tuple[str, ...]) -> None:
    """Exit 2 naming the half-finished run(s) and the command to resume or roll back each."""
    runs = unfinished_runs(app, playbooks)
    if runs and any(r["status"] in ("running", "rolling_back") for r in runs) and _lock_is_live(app):
        # Another process is at it: leave the answer to the lock (exit 4), for every run listed.
        runs = [r for r in runs if r["status"] not in ("running", "rolling_back")]
    if not runs:
        return
    lines = [f"run {r['run_id']} ({r['playbook']}) is {r['status'].replace('_', ' ')}"
             + (f" at {r['failed_step']}" if r["failed_step"] else "")
             + (f": finish it with `meshops resume {r['run_id']}` or undo it with `meshops rollback {r['run_id']}`"
                if r["status"] != "rollback_failed" else f": finish the rollback with `meshops rollback {r['run_id']}`")
             for r in runs]
    raise BadInput("an earlier run was left half-way; nothing was changed:\n  - " + "\n  - ".join(lines))


def upgrade_done(app: App, to_version: str, *, istio_namespace: str = "istio-system") -> str | None:
    """Why an upgrade to ``to_version`` has nothing to do, or None: one revision, at that version,
    ready, and every live proxy on it (the old revision is gone, nothing left to move)."""
    from meshops.ops.istio_common import collect

    snap = collect(app.drivers.kube, istio_namespace=istio_namespace)
    revisions = list(snap.revisions.values())
    if not revisions or any(r.version != to_version or not r.ready for r in revisions):
        return None
    proxies = snap.proxies_by_version()
    if set(proxies) - {to_version}:
        return None
    names = ", ".join(sorted(r.name for r in revisions))
    return (f"Istio {to_version} already runs here (revision {names}; {sum(proxies.values())} proxies, "
            f"all on {to_version}); nothing to do")


def install_done(app: App, *, overlay: str, version: str, revision: str) -> str | None:
    """Why ``meshops install`` has nothing to do, or None: the recorded overlay, version and revision
    are the ones asked for, and that revision's install is still there."""
    from meshops.domain.overlays import RECORD_NAMESPACE
    from meshops.ops import install_record
    from meshops.steps.install import installed_settings, overlays_sha

    kube = app.drivers.kube
    rec = install_record.read_recorded(kube)
    if rec is None or rec.sha256 != overlays_sha(overlay) or rec.version != version or rec.revision != revision:
        return None
    # What runs, not only what was recorded: that revision's istiod at that version.
    if installed_settings(kube, revision, RECORD_NAMESPACE)[1] != version:
        return None
    return (f"Istio {version} revision {revision or 'default'} is installed with this overlay "
            f"(sha256 {rec.sha256[:12]}); nothing to do")


def switchover_done(planned: list[Any], to_context: str) -> str | None:
    """Why a switchover has nothing to do, or None: the read DNS already sends every share to the target."""
    for p in planned:
        outputs = getattr(p, "outputs", None) or {}
        weights = outputs.get("initial_weights")
        if p.step_id in ("dns", "extdns-read") and isinstance(weights, list) and len(weights) == 2:
            source, target = (int(w) for w in weights)
            if source == 0 and target > 0:
                return f"all traffic of {outputs.get('name', 'the record')} already goes to {to_context}; nothing to do"
    return None
