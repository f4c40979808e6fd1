"""What step outputs say, for the report: waves (namespaces, workloads, gates) and traffic.

A step's outputs are its own business; the report recognises a few shapes the mesh steps use
(documented in ``docs/ci/README.md``) and ignores everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meshops.domain.report_model import Bake, Gate, Probe, Report, Traffic, Wave, WaveGroup, WeightPoint


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [] if v is None else [v]


def _names(v: Any) -> list[str]:
    out = []
    for x in _as_list(v):
        if isinstance(x, Mapping):
            parts = [str(x[k]) for k in ("kind", "namespace", "name") if x.get(k)]
            out.append("/".join(parts) if parts else str(dict(x)))
        elif x is not None:
            out.append(str(x))
    return out


def gates_of(data: Any) -> list[Gate]:
    """``gates`` as a list of dicts (name, ok/passed, detail), a mapping name -> bool|dict, or a watch report."""
    if not isinstance(data, Mapping):
        return []
    raw = data.get("gates", data.get("gate"))
    if isinstance(raw, Mapping) and "evaluations" in raw:
        bake = _bake("", raw)  # a gate watch report (the canary's waves keep theirs under "gates")
        return bake.gates if bake is not None else []
    items: list[tuple[str, Any]] = []
    if isinstance(raw, Mapping) and not any(k in raw for k in ("ok", "passed")):
        items = [(str(k), v) for k, v in raw.items()]
    else:
        items = [("", g) for g in _as_list(raw)]
    out = []
    for name, g in items:
        if isinstance(g, Mapping):
            ok = next((g[k] for k in ("ok", "passed", "healthy") if k in g), None)
            label = name or str(next((g[k] for k in ("name", "gate", "query", "url") if g.get(k)), "gate"))
            bits = [f"{k}={g[k]}" for k in ("value", "threshold", "observed", "limit") if k in g]
            detail = str(g.get("detail") or g.get("message") or g.get("reason") or ", ".join(bits))
            out.append(Gate(name=label, ok=None if ok is None else bool(ok), detail=detail))
        else:
            out.append(Gate(name=name or str(g), ok=g if isinstance(g, bool) else None))
    return out


def _first(data: Any, *keys: str) -> Any:
    if isinstance(data, Mapping):
        for k in keys:
            if data.get(k) not in (None, [], ""):
                return data[k]
    return None


def _wave_from(key: str, label: str, status: str, started: float | None, finished: float | None,
               *sources: Any) -> Wave:
    ns = next((_names(v) for v in (_first(s, "namespaces", "namespace") for s in sources) if v is not None), [])
    # A resumed wave restarts nothing it had already moved: those are its workloads too ("already").
    wl = next((_names(_first(s, "workloads")) or _names(_first(s, "restarted")) + _names(_first(s, "already"))
               for s in sources if _first(s, "workloads", "restarted", "already") is not None), [])
    gates = next((g for g in (gates_of(s) for s in sources) if g), [])
    if not gates:
        # A step that watched gates for a while (a bake) reports them as a watch report.
        bake = next((b for b in (_bake(key, _first(s, "report")) for s in sources) if b is not None), None)
        gates = bake.gates if bake is not None else []
    return Wave(key=key, label=label, status=status, started=started, finished=finished,
                namespaces=ns, workloads=wl, gates=gates)


def label_of(*sources: Any) -> str:
    """What a wave is about: its namespaces, else the traffic share it moved to, else its name."""
    for keys in (("namespaces", "namespace"), ("percent",), ("name",)):
        for src in sources:
            v = _first(src, *keys)
            if v is not None:
                return f"{v}%" if keys == ("percent",) else ", ".join(_names(v))
    return ""


def waves_of(rep: Report) -> list[WaveGroup]:
    groups = []
    for s in rep.top_level():
        if s.items:
            group = WaveGroup(step_id=s.key, concurrency=s.concurrency)
            for key in s.items:
                item = rep.step(key)
                # A canary wave's inputs carry its plan: its namespaces, even when it failed (no outputs).
                planned = item.inputs.get("wave") if isinstance(item.inputs, Mapping) else None
                plan = {"namespaces": planned.get("namespaces")} if isinstance(planned, Mapping) else None
                label = label_of(item.outputs, item.inputs, plan) or f"#{item.index}"
                group.waves.append(_wave_from(key, label, item.status, item.started, item.finished,
                                              item.outputs, item.inputs, plan))
            groups.append(group)
        waves = _first(s.outputs, "waves")
        if isinstance(waves, list) and waves and all(isinstance(w, Mapping) for w in waves):
            group = WaveGroup(step_id=s.key, concurrency=None)
            for n, w in enumerate(waves):
                started, finished = _epoch(w.get("started")), _epoch(w.get("finished"))
                status = str(w.get("status") or ("succeeded" if s.status == "succeeded" else s.status))
                wave = _wave_from(f"{s.key}.waves[{n}]", str(w.get("name") or f"wave {n + 1}"), status,
                                  started, finished, w)
                group.waves.append(wave)
            groups.append(group)
    return groups


def _epoch(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _weights(v: Any, inputs: Any = None) -> dict[str, int] | None:
    """A mapping id -> weight, or a (source, target) pair named by the step's source_id/target_id inputs."""
    if isinstance(v, Mapping) and v and all(isinstance(w, int) and not isinstance(w, bool) for w in v.values()):
        return {str(k): int(w) for k, w in v.items()}
    if (isinstance(v, list) and len(v) == 2 and all(isinstance(w, int) and not isinstance(w, bool) for w in v)
            and isinstance(inputs, Mapping) and inputs.get("source_id") and inputs.get("target_id")):
        return {str(inputs["source_id"]): v[0], str(inputs["target_id"]): v[1]}
    return None


def _bake(key: str, watch: Any) -> Bake | None:
    """A gate watch report (``started``, ``ended``, ``evaluations``, ``failures``, ``last``, ``failed_gate``)."""
    if not isinstance(watch, Mapping) or _epoch(watch.get("started")) is None:
        return None
    failures: Mapping[str, Any] = watch["failures"] if isinstance(watch.get("failures"), Mapping) else {}
    last: Mapping[str, Any] = watch["last"] if isinstance(watch.get("last"), Mapping) else {}
    evaluations = watch.get("evaluations") if isinstance(watch.get("evaluations"), int) else None
    gates = []
    for name in sorted({*map(str, failures), *map(str, last)}):
        failed = int(failures.get(name, 0) or 0)
        detail = f"{failed} failed of {evaluations} evaluations" if evaluations is not None else f"{failed} failed"
        if last.get(name):
            detail += f"; last: {last[name]}"
        tripped = str(watch.get("failed_gate") or "") == name
        gates.append(Gate(name=name, ok=not tripped, detail=detail, warned=failed > 0 and not tripped))
    started = _epoch(watch.get("started")) or 0.0
    return Bake(step=key, started=started, ended=_epoch(watch.get("ended")) or started, evaluations=evaluations,
                gates=gates, tripped=str(watch["failed_gate"]) if watch.get("failed_gate") else None)


def traffic_of(rep: Report) -> Traffic:
    """Weights over time, and the probes and gates that watched them.

    Two shapes: outputs ``weights`` as a mapping (with ``weights_before``), or the switchover's
    ``weights: [source, target]`` named by its inputs ``source_id``/``target_id`` (with
    ``initial_weights``, the weights from before the switchover, and ``report``, its bake).
    """
    traffic = Traffic()
    undone: list[tuple[float, dict[str, int], str]] = []
    for s in rep.steps:
        out = s.outputs if isinstance(s.outputs, Mapping) else {}
        inp = s.inputs if isinstance(s.inputs, Mapping) else {}
        after = _weights(out.get("weights"), inp)
        before = _weights(out.get("weights_before"), inp) or _weights(inp.get("initial_weights"), inp)
        bake = _bake(s.key, out.get("report"))
        last = s.attempts[-1] if s.attempts else None
        if after is not None and s.started is not None:
            _initial(traffic, before, rep.started or s.started)
            # The batch goes out when the step starts; its bake begins once Route53 says INSYNC.
            traffic.points.append(WeightPoint(ts=bake.started if bake else s.started, weights=after, step=s.key))
        elif s.status in ("failed", "failed_continued") and "source_weight" in inp and last and last.started:
            attempted = _weights([inp.get("source_weight"), inp.get("target_weight")], inp)
            if attempted is not None:
                _initial(traffic, before, rep.started or last.started)
                traffic.points.append(WeightPoint(ts=last.started, weights=attempted, step=s.key, attempted=True))
                traffic.bakes.append(Bake(step=s.key, started=last.started, ended=last.finished or last.started,
                                          evaluations=None, tripped="step failed",
                                          gates=[Gate(name="step failed", ok=False, detail=s.error or "")]))
        if bake is not None:
            traffic.bakes.append(bake)
        if before is not None and s.undo is not None and s.undo.status == "undone" and s.undo.finished:
            undone.append((s.undo.finished, before, s.key))
        for p in _as_list(out.get("probes")):
            if isinstance(p, Mapping) and ("ok" in p or "status" in p):
                ok = bool(p["ok"]) if "ok" in p else 200 <= int(p.get("status") or 0) < 400
                target = str(p.get("url") or p.get("target") or p.get("name") or "probe")
                detail = ", ".join(f"{k}={p[k]}" for k in ("status", "latency_ms", "error") if p.get(k) is not None)
                ts = _epoch(p.get("ts", p.get("time"))) or s.finished or s.started or 0.0
                traffic.probes.append(Probe(ts=ts, target=target, ok=ok, detail=detail))
    if undone and traffic.points:
        # Rollback undoes the newest shift first, and that one batch restores the weights from
        # before: later undos find nothing to do.
        ts, weights, key = min(undone, key=lambda u: u[0])
        traffic.points.append(WeightPoint(ts=ts, weights=weights, step=key, rollback=True))
    traffic.points.sort(key=lambda p: p.ts)
    traffic.probes.sort(key=lambda p: p.ts)
    traffic.bakes.sort(key=lambda b: b.started)
    return traffic


def _initial(traffic: Traffic, before: dict[str, int] | None, ts: float) -> None:
    # The weights from before held since before the run began: drawn from the run's start.
    if before is not None and not traffic.points:
        traffic.points.append(WeightPoint(ts=ts, weights=before, step="before"))
