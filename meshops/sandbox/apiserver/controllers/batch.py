"""Job and CronJob controllers, with a cron schedule parser.

Job pods run for ``rollout_seconds`` and succeed (the kubelet completes them). CronJob
schedules run on a sandbox clock that ticks ``60 / cron_minute_seconds`` times faster than the
wall clock, so a test can watch ``*/1 * * * *`` fire within a second.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ApiError
from ..jsonutil import age_seconds, clone, now_rfc3339, parse_rfc3339
from ..kinds import CRONJOBS, JOBS, PODS
from ..store import StoreEvent
from .base import Controller
from .util import (
    EventRecorder,
    Key,
    condition,
    is_active_pod,
    owner_keys,
    owner_ref,
    pod_from_template,
    pod_ready,
    set_condition,
    write_status,
)

Obj = dict[str, Any]

_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


class CronSchedule:
    """A five-field cron expression (names, ranges, steps, lists, macros), evaluated in UTC."""

    def __init__(self, expression: str) -> None:
        text = _MACROS.get(expression.strip(), expression.strip())
        if text.startswith("TZ=") or text.startswith("CRON_TZ="):
            text = text.split(None, 1)[1]
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"expected exactly 5 fields, found {len(fields)}: {expression}")
        self.minutes = self._field(fields[0], 0, 59, {})
        self.hours = self._field(fields[1], 0, 23, {})
        self.days = self._field(fields[2], 1, 31, {})
        self.months = self._field(fields[3], 1, 12, _MONTHS)
        self.weekdays = {d % 7 for d in self._field(fields[4], 0, 7, _DAYS)}
        self.any_day = fields[2] in ("*", "?")
        self.any_weekday = fields[4] in ("*", "?")

    @staticmethod
    def _field(text: str, low: int, high: int, names: dict[str, int]) -> set[int]:
        out: set[int] = set()
        for part in text.lower().split(","):
            step = 1
            if "/" in part:
                part, step_text = part.split("/", 1)
                step = int(step_text)
            if part in ("*", "?"):
                start, end = low, high
            elif "-" in part:
                a, b = part.split("-", 1)
                start, end = names.get(a) or int(a), names.get(b) or int(b)
            else:
                start = names[part] if part in names else int(part)
                end = high if step > 1 else start
            if start < low or end > high or start > end or step < 1:
                raise ValueError(f"value out of range in {text!r}")
            out.update(range(start, end + 1, step))
        return out

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow  # both restricted: either matches (cron's rule)

    def next_after(self, t: datetime) -> datetime:
        t = (t + timedelta(minutes=1)).replace(second=0, microsecond=0)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        raise ValueError("the schedule never fires")


class JobController(Controller):
    name = "job"
    watches = (JOBS, PODS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "job-controller")

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == JOBS:
            return [(event.namespace, event.name)] if event.type != "DELETED" else ()
        return owner_keys(event, "Job")

    def initial_keys(self) -> Iterable[Hashable]:
        return [(j["metadata"]["namespace"], j["metadata"]["name"]) for j in self.store.list(JOBS)[0]]

    def sync(self, key: Key) -> None:
        job = self.store.get(JOBS, *key)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        spec = job.get("spec") or {}
        pods = self.store.dependent_objects(job["metadata"]["uid"], PODS)
        active = [p for p in pods if is_active_pod(p)]
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        status = clone(job.get("status") or {})
        conditions = status.get("conditions") or []
        finished = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)
        if finished:
            self._ttl(job, status)
            return
        if spec.get("suspend"):
            for pod in active:
                self._delete_pod(pod)
            conditions = set_condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended")
            status.pop("startTime", None)
        else:
            if condition(job, "Suspended") is not None:
                conditions = set_condition(conditions, "Suspended", "False", "JobResumed", "Job resumed")
            status.setdefault("startTime", now_rfc3339())
            done = succeeded >= int(completions) if completions is not None else succeeded > 0
            if failed > int(spec.get("backoffLimit", 6)):
                for pod in active:
                    self._delete_pod(pod)
                conditions = set_condition(conditions, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                conditions = set_condition(conditions, "Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif done:
                conditions = set_condition(conditions, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods")
                conditions = set_condition(conditions, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")
                status["completionTime"] = now_rfc3339()
                self.events.record(job, "Normal", "Completed", "Job completed")
            else:
                remaining = (int(completions) - succeeded) if completions is not None else parallelism
                wanted = max(0, min(parallelism, remaining))
                for _ in range(wanted - len(active)):
                    self._create_pod(job)
        pods = self.store.dependent_objects(job["metadata"]["uid"], PODS)
        active = [p for p in pods if is_active_pod(p)]
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if pod_ready(p))
        status["succeeded"] = succeeded
        status["failed"] = failed
        status["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
        for field in ("active", "succeeded", "failed", "terminating"):
            if not status[field]:
                del status[field]
        if conditions:
            status["conditions"] = conditions
        write_status(self.cluster, JOBS, job, status)
        self._ttl(job, status)

    def _create_pod(self, job: Obj) -> None:
        pod = pod_from_template(job, (job.get("spec") or {}).get("template") or {})
        try:
            created = self.api.create(PODS, pod, namespace=job["metadata"]["namespace"], owned=True).obj
        except ApiError as e:
            self.events.record(job, "Warning", "FailedCreate", f"Error creating: {e.message}")
            raise
        self.events.record(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")

    def _delete_pod(self, pod: Obj) -> None:
        try:
            self.api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError as e:
            if e.code != 404:
                raise

    def _ttl(self, job: Obj, status: Obj) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished_at = status.get("completionTime") or next(
            (c.get("lastTransitionTime") for c in status.get("conditions") or [] if c.get("type") == "Failed" and c.get("status") == "True"), None
        )
        if ttl is None or not finished_at:
            return
        wait = float(ttl) - age_seconds(finished_at)
        if wait > 0:
            self.enqueue((job["metadata"]["namespace"], job["metadata"]["name"]), wait)
            return
        try:
            self.api.delete(JOBS, job["metadata"]["namespace"], job["metadata"]["name"], {"propagationPolicy": "Background"})
        except ApiError as e:
            if e.code != 404:
                raise


class CronJobController(Controller):
    name = "cronjob"
    watches = (CRONJOBS, JOBS)

    def __init__(self, cluster: Any) -> None:
        super().__init__(cluster)
        self.events = EventRecorder(cluster, "cronjob-controller")
        self._origin = time.time()

    def keys_for(self, event: StoreEvent) -> Iterable[Hashable]:
        if event.gr == CRONJOBS:
            return [(event.namespace, event.name)] if event.type != "DELETED" else ()
        return owner_keys(event, "CronJob")

    def initial_keys(self) -> Iterable[Hashable]:
        return [(c["metadata"]["namespace"], c["metadata"]["name"]) for c in self.store.list(CRONJOBS)[0]]

    # The sandbox clock: wall time, sped up so one cron minute lasts cron_minute_seconds.
    def _speed(self) -> float:
        return 60.0 / max(0.001, float(self.cluster.cron_minute_seconds))

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._origin + (time.time() - self._origin) * self._speed(), UTC)

    def _real_delay(self, sandbox_seconds: float) -> float:
        return max(0.0, sandbox_seconds / self._speed())

    def sync(self, key: Key) -> None:
        cj = self.store.get(CRONJOBS, *key)
        if cj is None or cj["metadata"].get("deletionTimestamp"):
            return
        spec = cj.get("spec") or {}
        namespace = cj["metadata"]["namespace"]
        jobs = self.store.dependent_objects(cj["metadata"]["uid"], JOBS)
        status = clone(cj.get("status") or {})
        finished = [j for j in jobs if _job_finished(j)]
        active = [j for j in jobs if not _job_finished(j)]
        for job in finished:
            if condition(job, "Complete") and (condition(job, "Complete") or {}).get("status") == "True":
                done_at = (job.get("status") or {}).get("completionTime")
                if done_at and (not status.get("lastSuccessfulTime") or parse_rfc3339(done_at) > parse_rfc3339(status["lastSuccessfulTime"])):
                    status["lastSuccessfulTime"] = done_at
        self._trim_history(cj, finished)
        try:
            schedule = CronSchedule(str(spec.get("schedule", "")))
        except ValueError as e:
            self.events.record(cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {e}")
            return
        now = self._now()
        last = status.get("lastScheduleTime") or cj["metadata"].get("creationTimestamp")
        base = datetime.fromtimestamp(parse_rfc3339(last), UTC) if last else now
        due = schedule.next_after(base)
        if due <= now and not spec.get("suspend"):
            # Only the most recent missed run is started, as kube does.
            while (following := schedule.next_after(due)) <= now:
                due = following
            policy = spec.get("concurrencyPolicy", "Allow")
            if active and policy == "Forbid":
                pass
            else:
                if active and policy == "Replace":
                    for job in active:
                        self._delete_job(job)
                    active = []
                new_job = self._create_job(cj, due)
                if new_job is not None:
                    active.append(new_job)
                status["lastScheduleTime"] = due.strftime("%Y-%m-%dT%H:%M:%SZ")
        status["active"] = [
            {"kind": "Job", "namespace": namespace, "name": j["metadata"]["name"], "uid": j["metadata"]["uid"], "apiVersion": "batch/v1", "resourceVersion": j["metadata"].get("resourceVersion")}
            for j in active
        ]
        if not status["active"]:
            del status["active"]
        write_status(self.cluster, CRONJOBS, cj, status)
        next_due = schedule.next_after(now)
        self.enqueue(key, self._real_delay((next_due - now).total_seconds()) + 0.01)

    def _create_job(self, cj: Obj, due: datetime) -> Obj | None:
        template = clone((cj.get("spec") or {}).get("jobTemplate") or {})
        tmeta = template.get("metadata") or {}
        name = f"{cj['metadata']['name']}-{int(due.timestamp() // 60)}"
        annotations = dict(tmeta.get("annotations") or {})
        annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] = due.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": name, "labels": dict(tmeta.get("labels") or {}), "annotations": annotations, "ownerReferences": [owner_ref(cj)]},
            "spec": template.get("spec") or {},
        }
        try:
            job = self.api.create(JOBS, body, namespace=cj["metadata"]["namespace"], owned=True).obj
        except ApiError as e:
            if e.code == 409:
                return None
            self.events.record(cj, "Warning", "FailedCreate", f"Error creating job: {e.message}")
            raise
        self.events.record(cj, "Normal", "SuccessfulCreate", f"Created job {name}")
        return job

    def _delete_job(self, job: Obj) -> None:
        try:
            self.api.delete(JOBS, job["metadata"]["namespace"], job["metadata"]["name"], {"propagationPolicy": "Background"})
        except ApiError as e:
            if e.code != 404:
                raise

    def _trim_history(self, cj: Obj, finished: list[Obj]) -> None:
        spec = cj.get("spec") or {}
        for wanted, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)), ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            jobs = sorted(
                (j for j in finished if (condition(j, wanted) or {}).get("status") == "True"),
                key=lambda j: j["metadata"].get("creationTimestamp", ""),
            )
            for job in jobs[: max(0, len(jobs) - int(limit))]:
                self._delete_job(job)


def _job_finished(job: Obj) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions") or [])
