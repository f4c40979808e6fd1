"""What ``meshops status`` shows, as data and as text: the outputs of the ``istio.status`` step."""

from __future__ import annotations

from typing import Any

from meshops.cli.app import App
from meshops.engine.journal import RunState

_OPEN = ("running", "interrupted", "awaiting_approval", "frozen", "rolling_back", "rollback_failed")


def collect_status(app: App) -> dict[str, Any]:
    """Run ``playbooks/status.yaml`` (one read-only step, journaled locally, no lock) and add the
    runs in progress that the cluster's journal mirror knows of."""
    from meshops.cli.install_cmds import playbook_path
    from meshops.drivers.kube_state import ConfigMapStateStore
    from meshops.engine.playbook import load_playbook, resolve_params
    from meshops.engine.runner import Engine
    from meshops.steps.istio_status import StatusOutputs

    loaded = load_playbook(playbook_path("status.yaml"))
    engine = Engine(store=app.store(cluster=False), drivers=app.drivers)
    result = engine.start(loaded, resolve_params(loaded.playbook, {}))
    state = RunState.replay(result.run_id, engine.store.records(result.run_id))
    status = StatusOutputs.model_validate(state.steps["status"].outputs)
    store = ConfigMapStateStore(app.drivers.kube)
    runs = []
    for run_id in store.run_ids():
        run = RunState.replay(run_id, store.records(run_id))
        if run.status in _OPEN:
            runs.append({"run_id": run_id, "playbook": run.playbook_name, "status": run.status,
                         "failed_step": run.failed_step})
    drift = revision_drift(app.drivers.kube, status.default_revision, sorted(status.revisions),
                           str(loaded.playbook.params["istio_namespace"].default))
    return {**status.model_dump(mode="json"), "runs_in_progress": runs, "drift": drift}


def revision_drift(kube: Any, default: str | None, revisions: list[str], namespace: str) -> dict[str, list[str]]:
    """Between the default revision and each other one: every field of their effective configuration
    that differs (mesh config, injector values, istiod, webhooks; domain.parity), so a half-done
    upgrade shows what moving the rest of the mesh would change."""
    from meshops.domain import parity
    from meshops.ops.istio_settings import effective_of

    if not default or len(revisions) < 2:
        return {}
    base = effective_of(kube, default, namespace)
    out: dict[str, list[str]] = {}
    for rev in revisions:
        if rev == default:
            continue
        report = parity.compare(effective_of(kube, rev, namespace), base)
        out[f"{rev} -> {default}"] = [d.describe() for d in (*report.unexpected, *report.documented)]
    return out


def render_status(d: dict[str, Any]) -> str:
    out = [f"cluster {d['context']} (Kubernetes {d['k8s_version']})", "revisions:"]
    for name, r in d["revisions"].items():
        flags = ["ready" if r["ready"] else "NOT READY"] + (["default"] if r["default"] else [])
        tags = f"  tags: {', '.join(r['tags'])}" if r["tags"] else ""
        out.append(f"  {name:<16} {r['version'] or '?':<10} {', '.join(flags)}{tags}")
    out.append(f"default revision: {d['default_revision'] or 'none'}   validation: {d['validator_revision'] or 'none'}")
    out.append("namespaces:")
    for ns, n in d["namespaces"].items():
        label = (f"istio-injection={n['injection']}" if n["injection"] else "") + \
                (f" istio.io/rev={n['rev']}" if n["rev"] else "")
        proxies = ", ".join(f"{rev}={count}" for rev, count in n["proxies"].items()) or "no proxies"
        out.append(f"  {ns:<24} {label.strip() or '(pod labels)':<34} -> {n['selects'] or 'none':<12} {proxies}")
    by_rev = ", ".join(f"{k}={v}" for k, v in d["proxies_by_revision"].items()) or "none"
    by_ver = ", ".join(f"{k}={v}" for k, v in d["proxies_by_version"].items()) or "none"
    out.append(f"proxies: by revision {by_rev}; by version {by_ver}")
    if d["workloads_on_old"]:
        out.append("workloads not on the default revision:")
        for rev, refs in d["workloads_on_old"].items():
            out.append(f"  {rev}: {', '.join(refs)}")
    out.append("dangling webhooks: " + ("; ".join(d["dangling_webhooks"]) or "none"))
    for pair, diffs in (d.get("drift") or {}).items():
        out.append(f"drift between revisions {pair}: " + ("none" if not diffs else f"{len(diffs)} field(s)"))
        out += [f"  {line}" for line in diffs]
    out.append("gateways:")
    for g in d["gateways"]:
        out.append(f"  {g['kind']}/{g['namespace']}/{g['name']} ({g['mode']}) on {g['revision']}, {g['replicas']} replica(s)")
    if d["lock"]:
        out.append(f"lock held by {d['lock']['holder']} since {d['lock']['since']}")
    for r in d["runs_in_progress"]:
        out.append(f"run in progress: {r['run_id']} ({r['playbook']}) {r['status']}"
                   + (f" at {r['failed_step']}" if r["failed_step"] else ""))
    if not d["lock"] and not d["runs_in_progress"]:
        out.append("runs in progress: none")
    return "\n".join(out)
