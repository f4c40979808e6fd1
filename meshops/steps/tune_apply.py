"""Steps of ``playbooks/tune-apply.yaml``: per-workload sidecar resources from ``meshops tune``.

``tune.load_annotations`` reads and checks the annotations document; ``tune.annotate_workload``
(one workload per foreach item; the foreach's concurrency is the wave size) sets the four
``sidecar.istio.io/proxy*`` annotations on the workload's pod template. Changing the
template is what restarts the pods, so that the injector gives their new sidecars the new
resources; the step waits for that rollout before the wave moves on.

The values it replaces are kept on the template under ``meshops.dev/previous-proxy-resources``
(with the run id), so undo can put them back even after a crash mid-step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field

from meshops.domain.errors import PermanentStepError, TemporaryStepError
from meshops.domain.tuning import parse_cpu, parse_memory
from meshops.drivers.kube_api import KubeApi, Obj
from meshops.ops.k8s_watch import watch_until
from meshops.ops.tune_report import ANNOTATIONS_API, ANNOTATIONS_KIND
from meshops.steps.base import Change, Step, StepContext, StepInputs, StepOutputs, StepPlan
from meshops.steps.registry import register

PROXY_KEYS = {
    "sidecar.istio.io/proxyCPU": parse_cpu,
    "sidecar.istio.io/proxyCPULimit": parse_cpu,
    "sidecar.istio.io/proxyMemory": parse_memory,
    "sidecar.istio.io/proxyMemoryLimit": parse_memory,
}
PREVIOUS = "meshops.dev/previous-proxy-resources"
KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def parse_annotations_file(text: str, source: str) -> list[dict[str, Any]]:
    """The workloads of a ProxyResourceAnnotations document (``meshops tune -o yaml``'s second)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind") == ANNOTATIONS_KIND]
    except yaml.YAMLError as exc:
        raise PermanentStepError(f"{source}: not valid YAML: {exc}") from None
    if len(docs) != 1:
        raise PermanentStepError(f"{source}: expected one {ANNOTATIONS_KIND} document, found {len(docs)}")
    doc = docs[0]
    if doc.get("apiVersion") != ANNOTATIONS_API:
        raise PermanentStepError(f"{source}: apiVersion: expected {ANNOTATIONS_API}, got {doc.get('apiVersion')!r}")
    out = []
    for i, w in enumerate(doc.get("workloads") or []):
        where = f"{source}: workloads[{i}]"
        if not isinstance(w, dict) or not w.get("namespace") or not w.get("name"):
            raise PermanentStepError(f"{where}: needs namespace and name")
        ann = w.get("annotations") or {}
        if not isinstance(ann, dict) or set(ann) != set(PROXY_KEYS):
            raise PermanentStepError(f"{where}.annotations: expected exactly {', '.join(sorted(PROXY_KEYS))}")
        for key, value in ann.items():
            try:
                PROXY_KEYS[key](str(value))
            except ValueError as exc:
                raise PermanentStepError(f"{where}.annotations.{key}: {exc}") from None
        out.append({"namespace": str(w["namespace"]), "name": str(w["name"]),
                    "annotations": {k: str(v) for k, v in ann.items()}})
    return out


class LoadInputs(StepInputs):
    file: Annotated[str, Field(min_length=1)]


class LoadOutputs(StepOutputs):
    workloads: list[dict[str, Any]]


@register
class LoadAnnotations(Step[LoadInputs, LoadOutputs]):
    name = "tune.load_annotations"
    Inputs, Outputs = LoadInputs, LoadOutputs
    read_only = True
    side_effect_free = True

    def run(self, inputs: LoadInputs, ctx: StepContext) -> LoadOutputs:
        try:
            text = Path(inputs.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise PermanentStepError(f"{inputs.file}: cannot read it: {exc}") from None
        return LoadOutputs(workloads=parse_annotations_file(text, inputs.file))

    def undo(self, inputs: LoadInputs, outputs: LoadOutputs | None, ctx: StepContext) -> None:
        return None


class AnnotateInputs(StepInputs):
    namespace: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    annotations: dict[str, str]
    wait: bool = True
    rollout_timeout: Annotated[float, Field(gt=0)] = 600.0
    skip_missing: bool = True


class AnnotateOutputs(StepOutputs):
    workload: str  # Kind/namespace/name, or "" when missing
    status: str  # annotated | unchanged | missing


def find_workload(kube: KubeApi, namespace: str, name: str) -> Obj | None:
    for kind in KINDS:
        obj = kube.get("apps/v1", kind, name, namespace)
        if obj is not None:
            obj.setdefault("kind", kind)
            return obj
    return None


def _template_annotations(obj: Obj) -> dict[str, str]:
    return dict(((obj.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {})


def rollout_done(obj: Obj) -> bool:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return False
    if obj.get("kind") == "DaemonSet":
        want = int(status.get("desiredNumberScheduled", 0))
        return int(status.get("updatedNumberScheduled", 0)) >= want and int(status.get("numberAvailable", 0)) >= want
    want = int(spec.get("replicas", 1))
    ready_key = "availableReplicas" if obj.get("kind") == "Deployment" else "readyReplicas"
    return int(status.get("updatedReplicas", 0)) >= want and int(status.get(ready_key, 0)) >= want


def wait_rollout(ctx: StepContext, kube: KubeApi, kind: str, namespace: str, name: str, default: float) -> None:
    def evaluate(items: list[Obj]) -> bool | None:
        # Deleted meanwhile: nothing left to wait for.
        return True if not items or rollout_done(items[0]) else None

    if watch_until(ctx, kube, "apps/v1", kind, namespace, evaluate=evaluate, timeout=default,
                   name=name) is None:
        raise TemporaryStepError(f"{kind} {namespace}/{name}: rollout not finished after {default:g}s")


@register
class AnnotateWorkload(Step[AnnotateInputs, AnnotateOutputs]):
    name = "tune.annotate_workload"
    Inputs, Outputs = AnnotateInputs, AnnotateOutputs
    needs = frozenset({"kube"})

    def plan(self, inputs: AnnotateInputs, ctx: StepContext) -> StepPlan:
        detail = ", ".join(f"{k.rsplit('/', 1)[1]}={v}" for k, v in sorted(inputs.annotations.items()))
        return StepPlan(changes=(Change(action="patch", target=f"{inputs.namespace}/{inputs.name} pod template",
                                        detail=detail),
                                 Change(action="restart", target=f"{inputs.namespace}/{inputs.name}",
                                        detail="rollout (the template changed)")))

    def run(self, inputs: AnnotateInputs, ctx: StepContext) -> AnnotateOutputs:
        unknown = set(inputs.annotations) - set(PROXY_KEYS)
        if unknown:
            raise PermanentStepError(f"not a proxy resource annotation: {', '.join(sorted(unknown))}")
        kube: KubeApi = ctx.drivers.kube
        obj = find_workload(kube, inputs.namespace, inputs.name)
        if obj is None:
            if inputs.skip_missing:
                ctx.log.warning("tune.workload_missing", namespace=inputs.namespace, name=inputs.name)
                return AnnotateOutputs(workload="", status="missing")
            raise PermanentStepError(f"no Deployment, StatefulSet or DaemonSet {inputs.namespace}/{inputs.name}")
        kind = str(obj["kind"])
        current = _template_annotations(obj)
        status = "unchanged"
        if any(current.get(k) != v for k, v in inputs.annotations.items()):
            marker = _marker(current)
            patch: dict[str, Any] = dict(inputs.annotations)
            if marker is None or marker.get("run") != ctx.run_id:
                patch[PREVIOUS] = json.dumps({"run": ctx.run_id, "values": {k: current.get(k) for k in PROXY_KEYS}},
                                             sort_keys=True)
            kube.patch("apps/v1", kind, inputs.name, {"spec": {"template": {"metadata": {"annotations": patch}}}},
                       inputs.namespace)
            status = "annotated"
            ctx.log.info("tune.annotated", workload=f"{kind}/{inputs.namespace}/{inputs.name}")
        if inputs.wait:
            wait_rollout(ctx, kube, kind, inputs.namespace, inputs.name, inputs.rollout_timeout)
        return AnnotateOutputs(workload=f"{kind}/{inputs.namespace}/{inputs.name}", status=status)

    def undo(self, inputs: AnnotateInputs, outputs: AnnotateOutputs | None, ctx: StepContext) -> None:
        kube: KubeApi = ctx.drivers.kube
        obj = find_workload(kube, inputs.namespace, inputs.name)
        if obj is None:
            return
        marker = _marker(_template_annotations(obj))
        if marker is None or marker.get("run") != ctx.run_id:
            return  # this run never changed it (or it was undone already)
        values = marker.get("values") or {}
        patch: dict[str, Any] = {k: values.get(k) for k in PROXY_KEYS}  # None removes the key
        patch[PREVIOUS] = None
        kube.patch("apps/v1", str(obj["kind"]), inputs.name,
                   {"spec": {"template": {"metadata": {"annotations": patch}}}}, inputs.namespace)
        if inputs.wait:
            wait_rollout(ctx, kube, str(obj["kind"]), inputs.namespace, inputs.name, inputs.rollout_timeout)


def _marker(annotations: dict[str, str]) -> dict[str, Any] | None:
    raw = annotations.get(PREVIOUS)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
