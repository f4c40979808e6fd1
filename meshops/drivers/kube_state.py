"""The run journal and the run lock, kept in the target cluster.

A Lease (``coordination.k8s.io/v1``) in ``meshops-system`` is the lock; a ConfigMap per
run holds the playbook and the journal, so a CI job on another runner can resume,
approve or roll back a run it did not start.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from meshops.domain.errors import Conflict, DriverError, LockHeld
from meshops.domain.k8stime import format_micro, parse_time
from meshops.domain.locks import PAUSED_ANNOTATION, LockLost, holder_is_dead, paused_holder, run_of
from meshops.domain.runlog import BadRecord, JournalRecord
from meshops.drivers.kube_api import KubeApi

NAMESPACE = "meshops-system"
_RUN_LABEL = "meshops.dev/run"

log = structlog.get_logger("meshops.lock")


def _ensure_namespace(kube: KubeApi) -> None:
    # A 409 usually means a concurrent run created it, but a conflict can come for other reasons
    # (a proxy, an injected fault): believe the namespace exists only once a read shows it.
    for _ in range(5):
        if kube.get("v1", "Namespace", NAMESPACE) is not None:
            return
        with contextlib.suppress(Conflict):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            return
    raise Conflict(f"could not create namespace {NAMESPACE}: every attempt conflicted")


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
        # A 409 says only that the Lease changed since it was read (or a proxy said so): read it
        # again, and give up the lock only when the read shows another holder.
        for _ in range(5):
            lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
            current = (lease.get("spec") or {}).get("holderIdentity") if lease is not None else None
            if current != self._holder:
                raise LockLost(f"{self.name} is now held by {current or 'nobody'}")
            assert lease is not None
            lease["spec"]["renewTime"] = format_micro(self._clock())
            try:
                self.kube.replace(lease)  # carries resourceVersion
                return
            except Conflict:
                continue
        raise Conflict(f"could not renew {self.name}: every attempt conflicted")

    def verify(self) -> None:
        """Raise LockLost if the Lease names another holder now (a read; changes nothing)."""
        if self._holder is None:
            return
        lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
        current = (lease.get("spec") or {}).get("holderIdentity") if lease is not None else None
        if current != self._holder:
            raise LockLost(f"{self.name} is now held by {current or 'nobody'}")

    def _change_if(self, still: Callable[[dict[str, Any]], bool], change: Callable[[dict[str, Any]], None]) -> bool:
        """Read the Lease; while ``still(lease)`` holds, apply ``change`` and write it. True if written.

        A 409 says only that the Lease changed since it was read, or that something in between
        said so (a proxy, an injected fault): only a fresh read tells whether it is still ours.
        Giving up on the first 409 left a finished run's Lease held (chaos seed 101, run 46).
        """
        for _ in range(5):
            lease = self.kube.get("coordination.k8s.io/v1", "Lease", self.lease_name, NAMESPACE)
            if lease is None or not still(lease):
                return False
            change(lease)
            try:
                self.kube.replace(lease)  # carries resourceVersion
                return True
            except Conflict:
                continue
        log.warning("lock.change_failed", lock=self.name, reason="every attempt conflicted")
        return False

    def pause(self, run_id: str) -> None:
        """Keep the Lease for a stopped run, marked with its run id: nobody else may take it."""
        holder, self._holder = self._holder, None
        if holder is None:
            return

        def mark(lease: dict[str, Any]) -> None:
            lease.setdefault("metadata", {}).setdefault("annotations", {})[PAUSED_ANNOTATION] = run_id
            lease["spec"]["renewTime"] = format_micro(self._clock())

        self._change_if(lambda lease: (lease.get("spec") or {}).get("holderIdentity") == holder, mark)

    def abandon(self, run_id: str) -> bool:
        """Release the Lease if ``run_id`` holds it (paused or not). True if it did."""
        def held_by_run(lease: dict[str, Any]) -> bool:
            annotations = (lease.get("metadata") or {}).get("annotations") or {}
            return annotations.get(PAUSED_ANNOTATION) == run_id or run_of((lease.get("spec") or {}).get("holderIdentity")) == run_id

        def free(lease: dict[str, Any]) -> None:
            ((lease.get("metadata") or {}).get("annotations") or {}).pop(PAUSED_ANNOTATION, None)
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["renewTime"] = None

        return self._change_if(held_by_run, free)

    def release(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return

        def free(lease: dict[str, Any]) -> None:
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["renewTime"] = None

        # Someone else holding it (taken over after expiry) makes ``still`` false: theirs now.
        self._change_if(lambda lease: (lease.get("spec") or {}).get("holderIdentity") == holder, free)


# A real API server refuses a ConfigMap whose data passes 1 MiB (1048576 bytes: Kubernetes'
# ValidateConfigMap, "must have at most 1048576 bytes", 422 Invalid). Chunks stop well short
# so one more record never pushes a chunk over; a record alone over the limit is refused.
CHUNK_BYTES = 512 * 1024
MAX_RECORD_BYTES = 256 * 1024
_CHUNK_LABEL = "meshops.dev/run-chunk"


class ConfigMapStateStore:
    """A run's journal in the cluster, append-only, in chunks that cannot outgrow a ConfigMap.

    ``meshops-run-<id>`` is the index (the playbook and the number of chunks);
    ``meshops-run-<id>-j<N>`` hold the records, each chunk below ``CHUNK_BYTES``. A chunk
    created whose index update was lost is still found: readers look one chunk past the index.
    """

    def __init__(self, kube: KubeApi, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.kube = kube
        self.chunk_bytes = chunk_bytes
        self._ready = False

    def _name(self, run_id: str) -> str:
        return f"meshops-run-{run_id}"[:240]

    def _chunk_name(self, run_id: str, n: int) -> str:
        return f"{self._name(run_id)}-j{n}"

    def create_run(self, run_id: str, *, playbook_text: str, playbook_path: str,
                   first: Sequence[dict[str, Any]] = ()) -> None:
        self._create_index(run_id, playbook_text=playbook_text, playbook_path=playbook_path)
        if first:
            self.append(run_id, list(first))

    def discard_run(self, run_id: str) -> None:
        """Not used for a mirror (runs are born locally); kept for the protocol: the index goes."""
        self.kube.delete("v1", "ConfigMap", self._name(run_id), namespace=NAMESPACE)

    def _create_index(self, run_id: str, *, playbook_text: str, playbook_path: str) -> None:
        if not self._ready:
            _ensure_namespace(self.kube)
            self._ready = True
        index = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self._name(run_id), "namespace": NAMESPACE, "labels": {_RUN_LABEL: "true"},
                         "annotations": {"meshops.dev/playbook-path": playbook_path}},
            "data": {"playbook.yaml": playbook_text, "chunks": "0"},
        }
        for _ in range(5):
            try:
                self.kube.create(index)
                return
            except Conflict:
                # AlreadyExists (an earlier attempt got through) or a conflict from in between:
                # only a read tells which.
                if self.exists(run_id):
                    return
        raise Conflict(f"could not create the journal index of run {run_id}: every attempt conflicted")

    def _index(self, run_id: str) -> dict[str, Any]:
        cm = self.kube.get("v1", "ConfigMap", self._name(run_id), NAMESPACE)
        if cm is None:
            raise Conflict(f"the journal index ConfigMap of run {run_id} is gone")
        return cm

    def _chunks(self, index: dict[str, Any]) -> int:
        try:
            return max(0, int((index.get("data") or {}).get("chunks", "0")))
        except ValueError:
            return 0

    def append(self, run_id: str, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records)
        size = len(text.encode())
        if size > MAX_RECORD_BYTES:
            raise DriverError(f"journal records of run {run_id} are {size} bytes; a ConfigMap chunk takes "
                              f"at most {MAX_RECORD_BYTES}", temporary=False)
        for _ in range(20):
            index = self._index(run_id)
            n = self._chunks(index)
            last = self.kube.get("v1", "ConfigMap", self._chunk_name(run_id, n - 1), NAMESPACE) if n else None
            spill = self.kube.get("v1", "ConfigMap", self._chunk_name(run_id, n), NAMESPACE)
            if spill is not None:  # created by an append whose index update was lost: count it now
                self._set_chunks(index, n + 1)
                continue
            current = str(((last or {}).get("data") or {}).get("journal.jsonl", ""))
            try:
                if last is not None and len(current.encode()) + size <= self.chunk_bytes:
                    last["data"]["journal.jsonl"] = current + text
                    self.kube.replace(last)  # resourceVersion makes concurrent appends safe
                    return
                self.kube.create({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": self._chunk_name(run_id, n), "namespace": NAMESPACE,
                                 "labels": {_CHUNK_LABEL: self._name(run_id)[:63].rstrip("-.")}},
                    "data": {"journal.jsonl": text},
                })
            except Conflict:
                continue
            self._set_chunks(index, n + 1)
            return
        raise Conflict(f"could not append to the journal of run {run_id}: too much contention")

    def _set_chunks(self, index: dict[str, Any], n: int) -> None:
        index.setdefault("data", {})["chunks"] = str(n)
        with contextlib.suppress(Conflict):  # someone else moved it on; readers probe past it anyway
            self.kube.replace(index)

    def records(self, run_id: str) -> list[dict[str, Any]]:
        index = self.kube.get("v1", "ConfigMap", self._name(run_id), NAMESPACE)
        if index is None:
            return []
        texts = [str((index.get("data") or {}).get("journal.jsonl", ""))]  # a journal from before chunks
        n = 0
        while True:
            chunk = self.kube.get("v1", "ConfigMap", self._chunk_name(run_id, n), NAMESPACE)
            if chunk is None and n >= self._chunks(index):
                break
            if chunk is not None:
                texts.append(str((chunk.get("data") or {}).get("journal.jsonl", "")))
            n += 1
        out = []
        for line in "".join(texts).splitlines():
            if not line.strip():
                continue
            try:
                out.append(JournalRecord.parse_line(line).to_dict())
            except BadRecord:
                continue  # as in the local journal: a damaged record is skipped, not the end
        return out

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
