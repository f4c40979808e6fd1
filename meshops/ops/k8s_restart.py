"""Restarting workloads through their pod template, K at a time, and waiting through watches.

A restart is one strategic-merge patch: the pod template's
``kubectl.kubernetes.io/restartedAt`` (what ``kubectl rollout restart`` sets), any pod
label the move needs, and on the workload itself a ``meshops.dev/restarted-by`` mark
naming the run and purpose. The mark makes a resumed run wait for a rollout it already
started instead of starting another, and tells a rollback what this run moved.

Up to ``concurrency`` rollouts run at once, in a sliding window: as soon as one finishes
(rollout complete *and* every live pod accepted by ``accept``, e.g. "runs revision R"),
the next one starts. Progress is read from a shared ``Cache`` of informers, so waiting
costs no requests at all.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from meshops.domain.errors import NotFound
from meshops.domain.mesh import RESTARTED_AT, Pod, as_int
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.drivers.kube_waits import Cache, rollout_state
from meshops.ops.context import StepContext
from meshops.ops.istio_common import RESTARTED_BY

# The pod label value a move replaced, kept on the workload so a rollback can put it back
# even when the run died before journaling its outputs ("-" = there was no label).
ORIGINAL_POD_LABELS = "meshops.dev/original-pod-labels"

# Patches in flight at once: enough to keep a window of hundreds of rollouts full, few enough
# not to crowd the API server (the rate limiter still applies to each).
_PATCH_THREADS = 8

@dataclass(frozen=True, kw_only=True)
class Target:
    kind: str
    namespace: str
    name: str
    labels: dict[str, str | None] = field(default_factory=dict)  # pod-template labels to set (None removes)
    forget_original: bool = False  # putting the original labels back: drop the record of them
    extra: dict[str, Any] = field(default_factory=dict)  # more strategic patch, merged into the restart's
    # A rollback: delete the StatefulSet's pods that never got ready on the bad template, or the
    # controller waits for them forever (Kubernetes "forced rollback").
    forced: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(kw_only=True)
class Report:
    restarted: list[str] = field(default_factory=list)  # patched by this call
    already: list[str] = field(default_factory=list)  # nothing to do (or done by an earlier attempt)
    failed: dict[str, str] = field(default_factory=dict)  # key -> why
    pending: dict[str, str] = field(default_factory=dict)  # still rolling out at the deadline -> state
    seconds: list[float] = field(default_factory=list)  # patch-to-settled time of each finished rollout

    def timing(self) -> dict[str, float]:
        """Rollout durations seen (count, mean, p50, p90, max), for the journal and benchmarks."""
        if not self.seconds:
            return {}
        xs = sorted(self.seconds)
        return {"count": len(xs), "mean": round(sum(xs) / len(xs), 3), "p50": round(xs[len(xs) // 2], 3),
                "p90": round(xs[min(len(xs) - 1, int(len(xs) * 0.9))], 3), "max": round(xs[-1], 3)}

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def problems(self) -> list[str]:
        return [f"{k}: {v}" for k, v in sorted(self.failed.items())] + \
               [f"{k}: not done in time ({v})" for k, v in sorted(self.pending.items())]


def _api_version(kind: str) -> str:
    return "apps/v1"


def expected_pods(obj: Obj) -> int:
    if obj.get("kind") == "DaemonSet":
        return as_int((obj.get("status") or {}).get("desiredNumberScheduled"))
    return as_int((obj.get("spec") or {}).get("replicas"), 1)


def settled(cache: Cache, t: Target, accept: Callable[[Pod], bool]) -> tuple[bool, str]:
    """Whether every live pod of ``t`` is ready and accepted, and there are as many as wanted."""
    obj = cache.workload(t.kind, t.namespace, t.name)
    if obj is None:
        return False, "gone"
    live = [p for p in cache.pods_of(t.kind, t.namespace, t.name) if p.live]
    bad = [p for p in live if not accept(p) or not p.ready]
    want = expected_pods(obj)
    if bad:
        return False, f"{len(bad)} pod(s) not ready on the new proxy (e.g. {bad[0].name})"
    if len(live) < want:
        return False, f"{len(live)} of {want} pods"
    return True, ""


_PATCHED = ("", "", "")  # a key that wakes the waiter when a patch finishes


def restart(ctx: StepContext, kube: KubeApi, cache: Cache, targets: list[Target], *, accept: Callable[[Pod], bool],
            mark: str, concurrency: int, timeout: float, force: bool = False) -> Report:
    """Restart ``targets`` ``concurrency`` at a time until each settles on pods ``accept`` likes.

    A target already marked ``mark`` is only waited for. One whose pods are all accepted and
    ready is left alone unless ``force``. Stops starting new restarts at the first failure.
    Patches go out from a small pool of threads, so the window refills as fast as the API
    server answers rather than one round trip at a time.
    """
    report = Report()
    queue = deque(targets)
    inflight: dict[Hashable, tuple[Target, int, float]] = {}
    patching: dict[Future[tuple[str, int]], Target] = {}
    deadline = ctx.clock() + timeout
    total = len(targets)
    sub = cache.subscribe()

    def wake(_: Future[tuple[str, int]]) -> None:
        with cache.cond:
            sub.add(_PATCHED)
            cache.cond.notify_all()

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, _PATCH_THREADS)),
                                thread_name_prefix="restart") as pool:
            while queue or inflight or patching:
                ctx.check()
                while queue and len(inflight) + len(patching) < concurrency and not report.failed:
                    t = queue.popleft()
                    fut = pool.submit(_start, ctx, kube, cache, t, accept=accept, mark=mark, force=force)
                    patching[fut] = t
                    fut.add_done_callback(wake)
                fresh: set[Hashable] = set()
                for fut in [f for f in patching if f.done()]:
                    t = patching.pop(fut)
                    outcome, generation = fut.result()
                    if outcome == "already":
                        report.already.append(t.key)
                        continue
                    if outcome == "restarted":
                        report.restarted.append(t.key)
                    key = (t.kind, t.namespace, t.name)
                    inflight[key] = (t, generation, ctx.clock())
                    fresh.add(key)
                if not inflight and not patching:
                    if report.failed:
                        break
                    continue
                with cache.cond:
                    if fresh or (sub and _PATCHED in sub):
                        changed = fresh | sub
                        sub.clear()
                    else:
                        changed = cache.wait_changes(sub, timeout=max(0.0, deadline - ctx.clock()), check=ctx.check)
                    _settle(cache, inflight, changed, accept, report, ctx.clock())
                    if ctx.clock() >= deadline and (inflight or patching):
                        for t, gen, _ in inflight.values():
                            state = rollout_state(cache.workload(t.kind, t.namespace, t.name), gen)
                            report.pending[t.key] = state.detail or settled(cache, t, accept)[1] or "rolling out"
                        break
                ctx.progress.update(done=total - len(queue) - len(inflight) - len(patching), total=total, label=mark)
                if report.failed and not patching:
                    break
    finally:
        cache.unsubscribe(sub)
    for t in queue:
        report.pending.setdefault(t.key, "not started")
    return report


def _settle(cache: Cache, inflight: dict[Hashable, tuple[Target, int, float]], changed: set[Hashable],
            accept: Callable[[Pod], bool], report: Report, now: float) -> None:
    """Retire the in-flight rollouts among ``changed`` that finished or failed (cache lock held)."""
    for key in changed & inflight.keys():
        t, gen, since = inflight[key]
        obj = cache.workload(t.kind, t.namespace, t.name)
        if obj is None:
            report.already.append(t.key)  # deleted while rolling out: nothing left to move
            del inflight[key]
            continue
        state = rollout_state(obj, gen)
        if state.failed:
            report.failed[t.key] = state.failed
            del inflight[key]
        elif state.done and settled(cache, t, accept)[0]:
            report.seconds.append(now - since)
            del inflight[key]


def _start(ctx: StepContext, kube: KubeApi, cache: Cache, t: Target, *, accept: Callable[[Pod], bool], mark: str,
           force: bool) -> tuple[str, int]:
    """Patch ``t``, or find an earlier attempt's patch: ("restarted"|"waiting", generation) or ("already", 0)."""
    with cache.cond:
        obj = cache.workload(t.kind, t.namespace, t.name)
        ok_now = settled(cache, t, accept)[0]
    if obj is None:
        return "already", 0  # deleted meanwhile: nothing left to move
    meta = obj.get("metadata") or {}
    if (meta.get("annotations") or {}).get(RESTARTED_BY) == mark:
        return "waiting", as_int(meta.get("generation"), 1)  # started by an earlier attempt: wait for it
    t_labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    relabel = any(t_labels.get(k) != v for k, v in t.labels.items()) or bool(t.extra)
    if ok_now and not force and not relabel:
        return "already", 0
    try:
        generation = _patch(ctx, kube, t, obj, mark)
    except NotFound:
        return "already", 0
    if t.forced and t.kind == "StatefulSet":
        with cache.cond:
            stuck = [p for p in cache.pods_of(t.kind, t.namespace, t.name) if p.live and not p.ready and not accept(p)]
        for p in stuck:
            ctx.log.warning("workload.forced_rollback", workload=t.key, pod=p.name)
            kube.delete("v1", "Pod", p.name, p.namespace)
    return "restarted", generation


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _patch(ctx: StepContext, kube: KubeApi, t: Target, obj: Obj, mark: str) -> int:
    stamp = datetime.fromtimestamp(ctx.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    template_meta: dict[str, object] = {"annotations": {RESTARTED_AT: stamp}}
    annotations: dict[str, str | None] = {RESTARTED_BY: mark}
    if t.forget_original:
        annotations[ORIGINAL_POD_LABELS] = None
    if t.labels:
        template_meta["labels"] = dict(t.labels)
        current = (obj.get("metadata") or {}).get("annotations") or {}
        if ORIGINAL_POD_LABELS not in current and not t.forget_original:
            t_labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            annotations[ORIGINAL_POD_LABELS] = json.dumps({k: t_labels.get(k) for k in t.labels}, sort_keys=True)
    body = _deep_merge({"metadata": {"annotations": annotations}, "spec": {"template": {"metadata": template_meta}}},
                       t.extra)
    out = kube.patch(_api_version(t.kind), t.kind, t.name, body, t.namespace, patch_type="strategic")
    ctx.log.debug("workload.restart", workload=t.key, mark=mark)
    return as_int((out.get("metadata") or {}).get("generation"), 1)
