"""What ``meshops tune`` writes: the tuning overlay, the per-workload annotations, the table.

* The overlay (an IstioOperator) sets istiod's resources, each gateway's, and the global
  sidecar default (``values.global.proxy.resources``); ``meshops install --tuning FILE``
  composes it after the profiles.
* The annotations document (``kind: ProxyResourceAnnotations``) lists the sidecar outliers
  with their four ``sidecar.istio.io/proxy*`` annotations; ``playbooks/tune-apply.yaml``
  applies it.
* The table shows every workload: current against the recommendation it would get, and
  the saving or the risk. "not enough data" rows carry no numbers.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from meshops.domain import overlays
from meshops.domain.tuning import Recommendation, Resources
from meshops.ops.tune_gather import TuneReport, WorkloadRow

ANNOTATIONS_API = "meshops.dev/v1"
ANNOTATIONS_KIND = "ProxyResourceAnnotations"


def provenance(report: TuneReport, url: str) -> dict[str, str]:
    p = report.policy
    return {
        "meshops.dev/tuned-from": url,
        "meshops.dev/tuned-window": f"{int(report.scope.window_seconds)}s until "
                                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(report.until))}",
        "meshops.dev/tuned-policy": (f"p{p.percentile:g} x {1 + p.cpu_margin:g} cpu / x {1 + p.memory_margin:g} memory"
                                     f" requests; p{p.limit_percentile:g} x {1 + p.limit_headroom:g} limits"),
    }


def overlay_document(report: TuneReport, url: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if report.control_plane is not None:
        spec.setdefault("components", {})["pilot"] = {"k8s": {"resources": report.control_plane.as_k8s()}}
    for name, res in sorted(report.gateways.items()):
        key = "egressGateways" if "egress" in name else "ingressGateways"
        spec.setdefault("components", {}).setdefault(key, []).append({"name": name, "k8s": {"resources": res.as_k8s()}})
    if report.proxy_default is not None:
        spec.setdefault("values", {}).setdefault("global", {})["proxy"] = {"resources": report.proxy_default.as_k8s()}
    problems = overlays.check_spec(spec)
    assert not problems, problems  # built from the model's own fields
    doc = overlays.document(spec, name="meshops-tuning")
    doc["metadata"]["annotations"] = provenance(report, url)
    return doc


def annotations_document(report: TuneReport, url: str) -> dict[str, Any]:
    items = []
    for r in report.rows:
        if r.annotate and isinstance(r.result, Recommendation):
            items.append({"namespace": r.namespace, "name": r.workload, "annotations": r.result.resources.as_annotations()})
    return {"apiVersion": ANNOTATIONS_API, "kind": ANNOTATIONS_KIND,
            "metadata": {"name": "meshops-tuning", "annotations": provenance(report, url)}, "workloads": items}


# libyaml's emitter when PyYAML has it: thousands of annotated workloads dump ~10x faster.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)


def render_yaml(report: TuneReport, url: str) -> str:
    return dump([overlay_document(report, url), annotations_document(report, url)])


def _res(cur: int | None, rec: int | None, unit: str) -> str:
    c = "?" if cur is None else f"{cur}{unit}"
    r = "-" if rec is None else f"{rec}{unit}"
    return f"{c}->{r}"


def _row(r: WorkloadRow) -> list[str]:
    name = f"{r.namespace}/{r.workload}" + ("" if r.container == "istio-proxy" else f" ({r.container})")
    if not isinstance(r.result, Recommendation):
        return [name, r.role, str(r.pods or "?"), str(min(r.usage.cpu_samples, r.usage.memory_samples)),
                "", "", "", "", r.result.reason]
    eff = r.effective or Resources()
    cur = r.current
    how = "annotate" if r.annotate else ("default" if r.role == "sidecar" else "overlay")
    note = (r.verdict.text if r.verdict else "") + (f" [capped: {', '.join(r.result.capped)}]" if r.result.capped else "")
    return [name, r.role, str(r.pods or "?"), str(min(r.usage.cpu_samples, r.usage.memory_samples)),
            _res(cur.cpu_request_m, eff.cpu_request_m, "m"), _res(cur.cpu_limit_m, eff.cpu_limit_m, "m"),
            _res(cur.memory_request_mi, eff.memory_request_mi, "Mi"),
            _res(cur.memory_limit_mi, eff.memory_limit_mi, "Mi"), f"{how}: {note}"]


def render_table(report: TuneReport) -> str:
    head = ["WORKLOAD", "ROLE", "PODS", "SAMPLES", "CPU REQ", "CPU LIM", "MEM REQ", "MEM LIM", "SAVING / RISK"]
    order = {"control-plane": 0, "gateway": 1, "sidecar": 2}
    rows = [_row(r) for r in sorted(report.rows, key=lambda r: (order[r.role], r.namespace, r.workload))]
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) if rows else len(head[i]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]
    cpu = sum(r.verdict.cpu_saving_m for r in report.rows if r.verdict)
    mem = sum(r.verdict.memory_saving_mi for r in report.rows if r.verdict)
    risks = sum(1 for r in report.rows if r.verdict and r.verdict.kind == "risk")
    short = sum(1 for r in report.rows if not isinstance(r.result, Recommendation))
    annotated = sum(1 for r in report.rows if r.annotate)
    d = report.proxy_default
    lines += ["",
              f"requests change by {-cpu:+d}m CPU and {-mem:+d}Mi memory over the pods counted "
              f"(negative: freed); {risks} at risk now; {short} without enough data; {annotated} sidecar(s) annotated",
              "proxy default: " + (f"requests {d.cpu_request_m}m/{d.memory_request_mi}Mi, limits "
                                   f"{d.cpu_limit_m}m/{d.memory_limit_mi}Mi" if d else "none (no sidecar with enough data)"),
              f"{report.queries} Prometheus queries, {report.seconds:.2f}s"]
    return "\n".join(lines)
