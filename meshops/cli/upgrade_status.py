"""What ``meshops status`` shows, as data and as text (``meshops demo`` prints it too)."""

from __future__ import annotations

from typing import Any

from meshops.cli.app import App
from meshops.engine.journal import RunState

_OPEN = ("running", "interrupted", "awaiting_approval", "frozen", "rolling_back", "rollback_failed")


def collect_status(app: App) -> dict[str, Any]:
    from meshops.drivers.kube_state import ConfigMapStateStore
    from meshops.ops.istio_common import collect
    from meshops.steps.istio_discover import lock_holder, summarize

    kube = app.drivers.kube
    snap = collect(kube)
    data = summarize(snap)
    default = data["default_revision"]
    on_old: dict[str, list[str]] = {}
    for p in snap.live_proxies():
        if p.revision != default:
            on_old.setdefault(p.revision or "?", []).append(f"{p.owner_kind or 'Pod'}/{p.namespace}/{p.owner_name or p.name}")
    data["workloads_on_old"] = {rev: sorted(set(refs)) for rev, refs in sorted(on_old.items())}
    data.pop("blockers", None)
    data.pop("workloads_on_old_count", None)
    data.pop("from_revision", None)
    data.pop("from_version", None)
    store = ConfigMapStateStore(kube)
    runs = []
    for run_id in store.run_ids():
        state = RunState.replay(run_id, store.records(run_id))
        if state.status in _OPEN:
            runs.append({"run_id": run_id, "playbook": state.playbook_name, "status": state.status,
                         "failed_step": state.failed_step})
    data = {"context": kube.context, **data, "lock": lock_holder(kube), "runs_in_progress": runs,
            "drift": revision_drift(kube, default, sorted(snap.revisions), snap.istio_namespace)}
    return data


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
