"""Chaos, switchover half: `meshops switchover` on the sandbox's blue-green scenario, faulted and
killed at random, then resumed or rolled back until it ends (driven by bench/chaos.py --kind).

One blue-green sandbox serves every run; the record is put back to the original CNAME (TTL 1 s)
and every health check removed between runs. meshops reaches Route53 through a proxy in front of
moto (tests/support/switchover.py) that injects, at random: Throttling (400), InternalFailure
(500), ServiceUnavailable (503), slow answers, and a 500 for a change that did apply. Kubernetes
faults (API 500/429/409/503 and the journal ConfigMap's updates failing) come from the sandbox.
The run is SIGKILLed after its Nth Route53 change (either once its answer was read, or after
Route53 applied it and before the answer reached meshops: between the call and its journal
record) or after its Nth Kubernetes write; the target's ingress may start answering 503 mid-way.

Checked with boto3 straight against moto and with kubectl, never through meshops:

- at every moment (an observer lists the record sets every ~100 ms for the whole run, kills and
  resumes included): a record answers at the name, weights are never all zero, never > 255;
- once the run ended: all traffic on the target (succeeded) or the original record back
  (rolled back, or never started); no health check of the run left unused (none at all after
  a rollback); the ``_meshops-lock.<record>`` TXT record gone; both clusters' run Leases free;
- the local journal and its mirror in the target cluster agree; neither the kubeconfig token nor
  the AWS secret key and session token is in any file under the state directory or the mirror.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from _support import env_file  # noqa: E402
from chaos import (  # noqa: E402
    MESHOPS,
    TERMINAL,
    Sandbox,
    _bad_exit,
    _lease_live,
    chaos_kubeconfig,
    check_journal,
    status_of,
)

from meshops.domain.weights import RecordSet  # noqa: E402
from tests.support.switchover import ProxyFault, Route53Proxy, is_route53_change  # noqa: E402

NAME = "app.example.com."
LOCK = "_meshops-lock.app.example.com."
CLUSTERS = ("blue", "green")
STEPS = ["10,25,50,100", "25,50,100", "50,100", "100"]


@dataclass(kw_only=True)
class SwitchoverPlan:
    index: int
    steps: str
    route53: list[ProxyFault]
    kube: dict[str, list[str]]  # cluster -> sandbox fault specs
    kill: tuple[str, int] | None  # ("route53-unanswered" | "route53" | "kube", N)
    ingress_503_at: int | None  # the target answers 503 once it holds this share
    first_action: str

    def fault_kinds(self) -> list[str]:
        kinds = [f"route53-{f.kind}" for f in self.route53]
        kinds += sorted({f"kube-{s.split(',')[0].replace('api-error:code=', 'api-')}" + (
            "-configmaps" if "resource=configmaps" in s else "") for specs in self.kube.values() for s in specs})
        if self.ingress_503_at is not None:
            kinds.append("ingress-503")
        return kinds

    def kill_point(self) -> str:
        return "-" if self.kill is None else f"{self.kill[0]} #{self.kill[1]}"


@dataclass(kw_only=True)
class SwitchoverOutcome:
    plan: SwitchoverPlan
    run_id: str | None = None
    history: list[str] = field(default_factory=list)
    status: str = "?"
    violations: list[str] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    killed: bool = False
    logs: list[tuple[str, str]] = field(default_factory=list)  # (command, its stderr)


def make_plan(rng: random.Random, index: int) -> SwitchoverPlan:
    route53 = []
    for kind in ("throttle", "500", "503"):
        if rng.random() < 0.35:
            route53.append(ProxyFault(kind=kind, rate=round(rng.uniform(0.02, 0.30), 2)))
    if rng.random() < 0.3:
        route53.append(ProxyFault(kind="slow", rate=round(rng.uniform(0.1, 0.5), 2), ms=rng.choice([200, 500, 1500])))
    if rng.random() < 0.2:
        route53.append(ProxyFault(kind="500-after", rate=round(rng.uniform(0.05, 0.2), 2)))
    kube: dict[str, list[str]] = {}
    for cluster in CLUSTERS:
        for code in (500, 429, 409, 503):
            if rng.random() < 0.12:
                extra = ",retry-after=1" if code == 429 else ""
                kube.setdefault(cluster, []).append(f"api-error:code={code},rate={round(rng.uniform(0.02, 0.3), 2)}{extra}")
    if rng.random() < 0.25:  # the journal mirror lives in the target cluster
        kube.setdefault("green", []).append(
            f"api-error:code=503,resource=configmaps,verbs=update,rate={round(rng.uniform(0.1, 0.5), 2)}")
    steps = rng.choice(STEPS)
    kill: tuple[str, int] | None = None
    roll = rng.random()
    if roll < 0.35:
        kill = ("route53-unanswered", rng.randint(1, 8))
    elif roll < 0.6:
        kill = ("route53", rng.randint(1, 8))
    elif roll < 0.85:
        kill = ("kube", rng.randint(1, 14))
    shares = [int(s) for s in steps.split(",") if int(s) < 100]
    ingress = rng.choice(shares) if shares and rng.random() < 0.25 else None
    return SwitchoverPlan(index=index, steps=steps, route53=route53, kube=kube, kill=kill, ingress_503_at=ingress,
                          first_action=rng.choice(["resume", "rollback"]))


class World(Sandbox):
    """The blue-green sandbox, moto behind a fault-injecting proxy, and a DNS observer."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        up = subprocess.run([*MESHOPS, "sandbox", "up", "--dir", str(directory), "--scenario", "blue-green"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        if up.returncode != 0:
            sys.exit(f"sandbox up failed: {up.stderr[-2000:]}")
        env = env_file(directory / "env")
        kubeconfig, self.token = chaos_kubeconfig(directory)
        aws_secret, aws_session = f"chaosawssecret{secrets.token_hex(12)}", f"chaosawssession{secrets.token_hex(16)}"
        # Values meshops must never write down: checked in every state file and the mirror.
        self.secrets = {"kubeconfig token": self.token, "AWS secret key": aws_secret, "AWS session token": aws_session}
        self.moto = env["AWS_ENDPOINT_URL_ROUTE_53"]
        self.zone = env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
        self.original = RecordSet(name=NAME, type="CNAME", ttl=1, values=(env["MESHOPS_SANDBOX_INGRESS_HOST_BLUE"],))
        self.client = self._client()
        self.proxy = Route53Proxy(upstream=self.moto)
        self.proxy.after_forward = self._after_forward
        self.env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "MESHOPS_LOG_FORMAT": "json",
                    "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL_ROUTE_53": self.proxy.url,
                    "AWS_SECRET_ACCESS_KEY": aws_secret, "AWS_SESSION_TOKEN": aws_session,
                    "AWS_EC2_METADATA_DISABLED": "true"}
        self.env.pop("MESHOPS_STATE_DIR", None)
        self.current = directory / "state-none"
        self.pgid: int | None = None
        self.changes = 0
        self.kill_at: int | None = None  # SIGKILL the run once Route53 applied this change, before it hears back
        self.killed_in_proxy = False
        self.observed: list[str] = []
        self.observations = 0
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._observer = threading.Thread(target=self._observe, daemon=True)
        self._observer.start()

    def _client(self) -> Any:
        return boto3.client("route53", endpoint_url=self.moto, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def down(self) -> None:
        if self.pgid is not None:  # a run still going when the bench is stopped
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        self._stop.set()
        self._observer.join(timeout=5)
        self.proxy.close()
        super().down()

    def state(self, cluster: str) -> Path:
        return self.current

    def argv(self, cluster: str, *args: str) -> list[str]:
        return [*MESHOPS, "--context", "green", "--state-dir", str(self.current), *args]

    # ---- the observer: what a resolver could be answered at any moment --------------------------

    def _observe(self) -> None:
        client = self._client()
        while not self._stop.wait(0.1):
            if self._paused.is_set():
                continue
            try:
                data = client.list_resource_record_sets(HostedZoneId=self.zone, StartRecordName=NAME,
                                                        MaxItems="20")["ResourceRecordSets"]
            except Exception as exc:  # the observer must outlive a hiccup of moto
                self.observed.append(f"observer could not read the records: {exc}")
                continue
            if self._paused.is_set():
                continue
            self.observations += 1
            rrs = [r for r in data if r["Name"] == NAME and r["Type"] in ("A", "AAAA", "CNAME")]
            weights = [r.get("Weight") for r in rrs if "SetIdentifier" in r]
            seen = ", ".join(f"{r.get('SetIdentifier', 'simple')}={r.get('Weight', '-')}" for r in rrs)
            if not rrs:
                self.observed.append("no record answers at the name")
            elif weights and all((w or 0) == 0 for w in weights):
                self.observed.append(f"every weight is 0 ({seen})")
            if any(w is not None and not 0 <= int(w) <= 255 for w in weights):
                self.observed.append(f"a weight outside 0-255 ({seen})")
            if weights and len(weights) != len(rrs):
                self.observed.append(f"simple and weighted records together ({seen})")

    # ---- the kill between a Route53 call and its journal record ---------------------------------

    def _after_forward(self, method: str, path: str, status: int) -> None:
        if not is_route53_change(method, path) or status >= 300:
            return
        self.changes += 1
        if self.kill_at is not None and self.changes >= self.kill_at and self.pgid is not None:
            self.kill_at = None
            self.killed_in_proxy = True
            os.killpg(self.pgid, signal.SIGKILL)  # the change applied; its answer is never read

    # ---- between runs ---------------------------------------------------------------------------

    def reset(self, index: int) -> None:
        """The record back to the original CNAME, no lock record, no health checks, no faults, no Leases."""
        self._paused.set()
        try:
            self.proxy.faults, self.proxy.on_change, self.proxy.injected = [], None, {}
            self.kill_at, self.killed_in_proxy, self.pgid, self.changes = None, False, None, 0
            self.clear()
            data = self.client.list_resource_record_sets(HostedZoneId=self.zone)["ResourceRecordSets"]
            changes = [{"Action": "DELETE", "ResourceRecordSet": r} for r in data
                       if r["Name"] in (NAME, LOCK) and not (r["Name"] == NAME and r == self.original.to_aws())]
            if not any(r == self.original.to_aws() for r in data):
                changes.append({"Action": "UPSERT", "ResourceRecordSet": self.original.to_aws()})
            if changes:
                self.client.change_resource_record_sets(HostedZoneId=self.zone, ChangeBatch={"Changes": changes})
            for hc in self.client.list_health_checks()["HealthChecks"]:
                self.client.delete_health_check(HealthCheckId=hc["Id"])
            for cluster in CLUSTERS:
                subprocess.run(["kubectl", "--context", cluster, "-n", "meshops-system", "delete", "lease",
                                "meshops-run-lock", "--ignore-not-found"], env=self.env, capture_output=True,
                               timeout=60, check=False)
            self.current = self.dir / f"state-{index}"
            self.observed, self.observations = [], 0
        finally:
            self._paused.clear()

    def records(self) -> list[dict[str, Any]]:
        data = self.client.list_resource_record_sets(HostedZoneId=self.zone)["ResourceRecordSets"]
        return [r for r in data if r["Name"] in (NAME, LOCK)]

    def kube_writes(self) -> int:
        return sum(self.writes(c) for c in CLUSTERS)


# ---- invariants ------------------------------------------------------------------------------------


def check_end(w: World, o: SwitchoverOutcome) -> list[str]:
    bad: list[str] = []
    everything = w.records()
    if any(r["Name"] == LOCK for r in everything):
        bad.append(f"the record lock {LOCK} is still there")
    rrs = [r for r in everything if r["Name"] == NAME]
    weights = {r.get("SetIdentifier"): r.get("Weight") for r in rrs}
    if o.status == "succeeded":
        if not (weights.get("green") and not weights.get("blue") and all("SetIdentifier" in r for r in rrs)):
            bad.append(f"succeeded but the traffic is not all on the target: {weights}")
    elif [RecordSet.from_aws(r) for r in rrs] != [w.original]:
        bad.append(f"{o.status} but the record is not the original one: {rrs}")
    in_use = {r.get("HealthCheckId") for r in rrs}
    for hc in w.client.list_health_checks()["HealthChecks"]:
        ours = o.run_id is not None and hc["CallerReference"].startswith(f"meshops-{o.run_id}")
        if ours and (o.status != "succeeded" or hc["Id"] not in in_use):
            bad.append(f"health check {hc['Id']} of the run left behind ({o.status})")
        elif not hc["CallerReference"].startswith("meshops-") or (o.run_id is None and hc["Id"] not in in_use):
            bad.append(f"health check {hc['Id']} ({hc['CallerReference']}) left behind")
    for cluster in CLUSTERS:
        lease = w.kubectl(cluster, "get", "lease", "-n", "meshops-system", "meshops-run-lock")
        if lease is None:
            continue
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        paused = (lease["metadata"].get("annotations") or {}).get("meshops.dev/paused-run")
        if paused or (holder and _lease_live(spec)):
            bad.append(f"the run Lease in {cluster} is still held by {holder or paused}")
    if o.run_id is not None:
        bad += check_journal(w, "green", o.run_id)
    return bad


# ---- one run ---------------------------------------------------------------------------------------


def _on_change(w: World, plan: SwitchoverPlan, o: SwitchoverOutcome) -> Any:
    def hook(batch: dict[str, Any]) -> None:
        for c in batch["Changes"]:
            rr = c["ResourceRecordSet"]
            if rr.get("SetIdentifier") == "green" and rr.get("Weight") and plan.ingress_503_at is not None:
                total = sum(int(x["ResourceRecordSet"].get("Weight") or 0) for x in batch["Changes"]) or 1
                if 100 * int(rr["Weight"]) // total >= plan.ingress_503_at and "ingress 503" not in o.history:
                    w.fault("green", ["ingress-503"])
                    o.history.append("ingress 503")
    return hook


def _run_id(w: World, besides: str | None = None) -> str | None:
    runs = w.current / "runs"
    ids = sorted(p.name for p in runs.iterdir() if p.name != besides) if runs.exists() else []
    return ids[-1] if ids else None


def one_run(w: World, plan: SwitchoverPlan, rng: random.Random) -> SwitchoverOutcome:
    o = SwitchoverOutcome(plan=plan)
    w.reset(plan.index)
    for cluster, specs in plan.kube.items():
        w.fault(cluster, specs)
    w.proxy.rng, w.proxy.faults = random.Random(rng.random()), list(plan.route53)
    w.proxy.on_change = _on_change(w, plan, o)
    kube_mark = w.kube_writes()
    argv = w.argv("green", "switchover", "--from", "blue", "--to", "green", "--zone", "example.com",
                  "--record", "app.example.com", "--probe", "http://app.example.com/productpage",
                  "--steps", plan.steps, "--bake", "0.5s", "--propagation-allowance", "0s",
                  "--probe-interval", "0.25s")
    proc = subprocess.Popen(argv, cwd=ROOT, env=w.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    w.pgid = proc.pid
    if plan.kill is not None and plan.kill[0] == "route53-unanswered":
        w.kill_at = plan.kill[1]
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 240:
        if plan.kill is not None and not o.killed and (
                (plan.kill[0] == "route53" and w.changes >= plan.kill[1])
                or (plan.kill[0] == "kube" and w.kube_writes() - kube_mark >= plan.kill[1])):
            os.killpg(proc.pid, signal.SIGKILL)
            o.killed = True
            break
        time.sleep(0.01)
    if proc.poll() is None and not o.killed and not w.killed_in_proxy:
        os.killpg(proc.pid, signal.SIGKILL)
        o.history.append("hung: killed after 240 s")
        o.killed = True
    o.killed = o.killed or w.killed_in_proxy
    w.kill_at = None
    code = proc.wait(timeout=30)
    _, err = proc.communicate(timeout=30)
    o.logs.append(("switchover", err))
    o.injected = dict(w.proxy.injected)
    o.history.append(f"run: {'SIGKILL' if o.killed else f'exit {code}'} after {w.changes} Route53 changes, "
                     f"{w.kube_writes() - kube_mark} kube writes, {time.monotonic() - started:.1f}s")
    if not o.killed and code != 0:
        o.violations += _bad_exit("run", code, err)
        o.history.append(f"stderr: {err.strip().splitlines()[-1][:200] if err.strip() else ''}")
        if code not in (1, 2, 4, 130):
            (w.dir.parent / f"meshops-chaos-sw-{plan.index}.stderr").write_text(err)
    w.proxy.faults = []
    w.clear()
    o.run_id = first = _run_id(w)
    if o.run_id is not None and o.killed and status_of(w, "green", o.run_id) == "unknown":
        # Its directory made, killed before its first record: meshops knows no such run.
        o.history.append("killed before the run's first record")
        o.run_id = None
    if o.run_id is None and o.killed:
        # Killed before its run existed (between taking the record lock and writing its first
        # journal record): nothing to resume, so the operator runs the switchover again, which
        # must take over the dead run's locks.
        again = subprocess.run(argv, cwd=ROOT, env=w.env, capture_output=True, text=True, timeout=240, check=False)
        o.logs.append(("switchover-again", again.stderr))
        o.history.append(f"switchover again: exit {again.returncode}")
        o.violations += _bad_exit("switchover again", again.returncode, again.stderr)
        if again.returncode not in (0, 1):
            o.history.append(f"stderr: {again.stderr.strip().splitlines()[-1][:200] if again.stderr.strip() else ''}")
        o.run_id = _run_id(w, besides=first)
    if o.run_id is not None and o.killed and status_of(w, "green", o.run_id) in ("succeeded", "rolled_back"):
        # Killed after its last record, maybe before it gave its locks back: the operator checks
        # the run once (`resume` of a finished run, `rollback` of a rolled-back one), which takes
        # over and releases what the dead process still held.
        action = "resume" if status_of(w, "green", o.run_id) == "succeeded" else "rollback"
        out = w.run("green", action, o.run_id)
        o.logs.append((action, out.stderr))
        o.history.append(f"finished before the kill; {action}: exit {out.returncode}")
        o.violations += _bad_exit(action, out.returncode, out.stderr)
    if o.run_id is None:
        o.status = "never started"
    else:
        action = plan.first_action
        for _ in range(8):
            o.status = status_of(w, "green", o.run_id)
            if o.status in TERMINAL:
                break
            if o.status in ("frozen", "failed", "rollback_failed", "rolling_back", "abandoned"):
                action = "rollback"
            t0 = time.monotonic()
            out = w.run("green", action, o.run_id)
            o.logs.append((action, out.stderr))
            o.history.append(f"{action}: exit {out.returncode}, {time.monotonic() - t0:.1f}s")
            o.violations += _bad_exit(action, out.returncode, out.stderr)
            if out.returncode not in (0, 1, 4):
                o.history.append(f"stderr: {out.stderr.strip().splitlines()[-1][:200] if out.stderr.strip() else ''}")
                (w.dir.parent / f"meshops-chaos-sw-{plan.index}-{action}.stderr").write_text(out.stderr)
            if out.returncode == 4:
                time.sleep(2)
            action = rng.choice(["resume", "rollback"]) if action == "resume" else "rollback"
        o.status = status_of(w, "green", o.run_id)
        if o.status not in TERMINAL:
            o.violations.append(f"run did not end: {o.status}")
    time.sleep(0.25)  # the observer's last look at the end state
    o.history.append(f"{w.observations} DNS looks")
    if w.observations == 0:
        o.violations.append("the DNS observer never read the records")
    o.violations += [f"observed: {v}" for v in dict.fromkeys(w.observed)]
    o.violations += check_end(w, o)
    if o.violations:
        keep_evidence(w, o)
    return o


def keep_evidence(w: World, o: SwitchoverOutcome) -> None:
    """A run with a violation leaves its state directory and every command's stderr behind."""
    where = Path(tempfile.gettempdir()) / "meshops-chaos-sw-evidence" / f"{w.dir.name}-run-{o.plan.index}"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    if w.current.exists():
        shutil.copytree(w.current, where / "state")
    for i, (what, text) in enumerate(o.logs):
        (where / f"{i}-{what}.stderr").write_text(text)
    (where / "violations.txt").write_text("\n".join(o.violations) + "\n")
    o.history.append(f"evidence in {where}")


def describe(o: SwitchoverOutcome, seconds: float) -> str:
    p = o.plan
    hit = ", ".join(f"{k} x{v}" for k, v in sorted(o.injected.items())) or "none hit"
    return (f"run {p.index:3d} switchover [steps {p.steps}; {', '.join(p.fault_kinds()) or 'no faults'} "
            f"(Route53: {hit}); kill after {p.kill_point()}] -> {o.status} ({'; '.join(o.history)}) {seconds:.1f}s")
