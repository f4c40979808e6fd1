"""The run journal and the run lock, kept in the target cluster.

A Lease (``coordination.k8s.io/v1``) in ``meshops-system`` is the lock; a ConfigMap per
run holds the playbook and the journal, so a CI job on another runner can resume,
approve or roll back a run it did not start.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from meshops.domain.errors import Conflict, LockHeld
from meshops.domain.k8stime import format_micro, parse_time
from meshops.domain.locks import PAUSED_ANNOTATION, LockLost, holder_is_dead, paused_holder, run_of
from meshops.drivers.kube import KubeApi

NAMESPACE = "meshops-system"
_RUN_LABEL = "meshops.dev/run"


def _ensure_namespace(kube: KubeApi) -> None:
    if kube.get("v1", "Namespace", NAMESPACE) is None:
        with contextlib.suppress(Conflict):  # created by a concurrent run
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})


class LeaseLock:
    """A Lease as a run lock: held, renewed, and taken over once its holder stops renewing."""

    def __init__(self, kube: KubeApi, *, name: str = "meshops-run-lock", duration: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.lease_name = name
        self.name = f"Lease {NAMESPACE}/{name} in {kube.context}"
        self.duration = duration
        self._clock = clock
        self._holder: str | None = None

    def acquire(self, holder: str) -> None:
        _ensure_namespace(self.kube)
        for _ in range(5):
            now = self._clock()
            lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
            spec: dict[str, Any] = {
                "holderIdentity": holder, "leaseDurationSeconds": int(self.duration),
                "acquireTime": format_micro(now), "renewTime": format_micro(now), "leaseTransitions": 0,
            }
            try:
                if lease is None:
                    self.kube.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                      "metadata": {"name": self.lease_name, "namespace": NAMESPACE}, "spec": spec})
                else:
                    cur = lease.get("spec") or {}
                    annotations = (lease.get("metadata") or {}).get("annotations") or {}
                    paused = annotations.get(PAUSED_ANNOTATION)
                    if paused and paused != run_of(holder):
                        raise LockHeld(holder=paused_holder(paused), since=cur.get("renewTime") or "?", lock=self.name)
                    if paused:
                        annotations.pop(PAUSED_ANNOTATION, None)  # its own run resumes: no longer paused
                    current_holder = cur.get("holderIdentity")
                    renewed = parse_time(cur.get("renewTime"))
                    held_for = float(cur.get("leaseDurationSeconds") or self.duration)
                    alive = not holder_is_dead(current_holder) if current_holder else False
                    if (current_holder and not paused and current_holder != holder and alive
                            and renewed + held_for > now):
                        since = cur.get("acquireTime") or cur.get("renewTime") or "?"
                        raise LockHeld(holder=current_holder, since=since, lock=self.name)
                    if current_holder == holder:
                        spec["acquireTime"] = cur.get("acquireTime", spec["acquireTime"])
                    spec["leaseTransitions"] = int(cur.get("leaseTransitions") or 0) + (current_holder != holder)
                    lease["spec"] = spec
                    self.kube.replace(lease)  # carries resourceVersion: a concurrent taker gets 409
                self._holder = holder
                return
            except Conflict:
                continue
        raise LockHeld(holder="(contended)", since=format_micro(self._clock()), lock=self.name)

    def renew(self) -> None:
        if self._holder is None:
            return
        lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
        current = (lease.get("spec") or {}).get("holderIdentity") if lease is not None else None
        if current != self._holder:
            raise LockLost(f"{self.name} is now held by {current or 'nobody'}")
        assert lease is not None
        lease["spec"]["renewTime"] = format_micro(self._clock())
        try:
            self.kube.replace(lease)  # resourceVersion: a holder change in between is a 409
        except Conflict:
            raise LockLost(f"{self.name} changed while renewing it") from None

    def pause(self, run_id: str) -> None:
        """Keep the Lease for a stopped run, marked with its run id: nobody else may take it."""
        holder, self._holder = self._holder, None
        if holder is None:
            return
        lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != holder:
            return
        lease.setdefault("metadata", {}).setdefault("annotations", {})[PAUSED_ANNOTATION] = run_id
        lease["spec"]["renewTime"] = format_micro(self._clock())
        self.kube.replace(lease)

    def abandon(self, run_id: str) -> bool:
        """Release the Lease if ``run_id`` holds it (paused or not). True if it did."""
        lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
        if lease is None:
            return False
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        holder = (lease.get("spec") or {}).get("holderIdentity")
        if annotations.get(PAUSED_ANNOTATION) != run_id and run_of(holder) != run_id:
            return False
        annotations.pop(PAUSED_ANNOTATION, None)
        lease["spec"]["holderIdentity"] = None
        lease["spec"]["renewTime"] = None
        self.kube.replace(lease)
        return True

    def release(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == holder:
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["renewTime"] = None
            with contextlib.suppress(Conflict):  # someone took it after expiry; it is theirs now
                self.kube.replace(lease)


class ConfigMapStateStore:
    """One ConfigMap per run (``meshops-run-<id>``): ``playbook.yaml`` and ``journal.jsonl``."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._ready = False

    def _name(self, run_id: str) -> str:
        return f"meshops-run-{run_id}"[:253]

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str) -> None:
        if not self._ready:
            _ensure_namespace(self.kube)
            self._ready = True
        self.kube.create({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self._name(run_id), "namespace": NAMESPACE, "labels": {_RUN_LABEL: "true"},
                         "annotations": {"meshops.dev/playbook-path": playbook_path}},
            "data": {"playbook.yaml": playbook_text, "journal.jsonl": ""},
        })

    def append(self, run_id: str, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records)
        for _ in range(20):
            cm = self.kube.get("v1", "ConfigMap", self._name(run_id), NAMESPACE)
            if cm is None:
                raise Conflict(f"the journal ConfigMap of run {run_id} is gone")
            cm.setdefault("data", {})
            cm["data"]["journal.jsonl"] = cm["data"].get("journal.jsonl", "") + text
            try:
                self.kube.replace(cm)  # resourceVersion makes concurrent appends (meshops approve) safe
                return
            except Conflict:
                continue
        raise Conflict(f"could not append to the journal of run {run_id}: too much contention")

    def records(self, run_id: str) -> list[dict[str, Any]]:
        cm = self.kube.get("v1", "ConfigMap", self._name(run_id), NAMESPACE)
        if cm is None:
            return []
        return [json.loads(line) for line in (cm.get("data") or {}).get("journal.jsonl", "").splitlines() if line]

    def playbook_text(self, run_id: str) -> str:
        cm = self.kube.get("v1", "ConfigMap", self._name(run_id), NAMESPACE)
        return "" if cm is None else str((cm.get("data") or {}).get("playbook.yaml", ""))

    def run_ids(self) -> list[str]:
        if self.kube.get("v1", "Namespace", NAMESPACE) is None:
            return []
        items = self.kube.list("v1", "ConfigMap", NAMESPACE, label_selector=f"{_RUN_LABEL}=true").items
        return sorted(i["metadata"]["name"].removeprefix("meshops-run-") for i in items)

    def exists(self, run_id: str) -> bool:
        return self.kube.get("v1", "ConfigMap", self._name(run_id), NAMESPACE) is not None
