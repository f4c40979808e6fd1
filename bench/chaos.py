"""Chaos: canary upgrades and switchovers killed and faulted at random, then resumed or rolled back until they end.

    python bench/chaos.py --runs 50 --seed S [--kind canary|switchover|both] [--batch 5] [--keep]

With ``--kind both`` (the default) runs alternate kinds. The switchover half is in
bench/chaos_switchover.py (its docstring says what it injects and checks); the canary half:

Each run gets its own sandbox cluster (a batch of clusters per sandbox). A seeded random
schedule decides, per run: API faults (500/429/409/503 at 2-30 %, latency, watch cuts, the
journal's ConfigMap writes failing), whether the run's Lease is stolen, and when the run is
SIGKILLed (after its Nth write in the audit log: inside steps, and between an API call and its
journal record). Faults are then cleared and the run is resumed or rolled back (at random, or
as its state requires) until it ends. Then the invariants are checked with kubectl, never
through meshops:

- no namespace selects a revision (or tag) that does not exist;
- every injected pod's proxy has a running istiod of its revision;
- the mesh config of every installed revision equals the original one;
- gateways Ready, and connected to a running istiod of their revision;
- after a rollback, exactly the original revisions are left;
- the run Lease is free (no holder, not paused) once the run ended;
- the local journal and its cluster mirror hold the same records;
- the kubeconfig's token (a secret) is in no file under the state directory nor in the mirror.

Prints the seed, every run's fault kinds and kill point, what happened, and each violation
(with the seed and run index that reproduce it); exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MESHOPS = [sys.executable, "-m", "meshops"]
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
UPGRADE = ["upgrade", "--to", "1.25.2", "--concurrency", "2", "--wave-size", "2"]
TERMINAL = {"succeeded", "rolled_back", "refused"}


@dataclass(kw_only=True)
class Plan:
    index: int
    cluster: str
    faults: list[str]
    steal_lease_after: float | None
    kill_after_writes: int | None
    first_action: str  # resume | rollback, after the kill


@dataclass(kw_only=True)
class Outcome:
    plan: Plan
    run_id: str | None = None
    history: list[str] = field(default_factory=list)
    status: str = "?"
    violations: list[str] = field(default_factory=list)


def make_plan(rng: random.Random, index: int, cluster: str) -> Plan:
    faults = []
    for code in (500, 429, 409, 503):
        if rng.random() < 0.35:
            rate = round(rng.uniform(0.02, 0.30), 2)
            extra = ",retry-after=1" if code == 429 else ""
            faults.append(f"api-error:code={code},rate={rate}{extra}")
    if rng.random() < 0.3:
        faults.append(f"api-latency:ms={rng.choice([20, 50, 100])},rate={round(rng.uniform(0.1, 0.5), 2)}")
    if rng.random() < 0.3:
        faults.append(f"watch-cut:after={rng.randint(2, 20)}")
    if rng.random() < 0.3:
        faults.append(f"api-error:code=503,resource=configmaps,verbs=update,rate={round(rng.uniform(0.1, 0.5), 2)}")
    steal = round(rng.uniform(1.0, 8.0), 1) if rng.random() < 0.2 else None
    kill = rng.randint(1, 64) if rng.random() < 0.8 else None
    return Plan(index=index, cluster=cluster, faults=faults, steal_lease_after=steal, kill_after_writes=kill,
                first_action=rng.choice(["resume", "rollback"]))


def chaos_kubeconfig(directory: Path) -> tuple[Path, str]:
    """The kubeconfig the runs use and its bearer token (the secret looked for afterwards).

    A sandbox that authenticates writes a random token (``sbx-...``) into its kubeconfig: that
    one is used, as the API server requires it. An older sandbox's token is the word
    "sandbox", which is in every hostname: it is replaced by a distinctive value."""
    text = (directory / "kubeconfig").read_text()
    token = f"chaos-{secrets.token_hex(12)}"
    if "token: sandbox" in text:
        text = text.replace("token: sandbox", f"token: {token}")
    else:
        found = re.search(r"^\s*token:\s*[\"']?([^\s\"']+)", text, re.MULTILINE)
        if found is None or len(found.group(1)) < 12:
            sys.exit("the sandbox's kubeconfig has no distinctive token to look for")
        token = found.group(1)
    path = directory / "kubeconfig-chaos"
    path.write_text(text)
    return path, token


class Sandbox:
    def __init__(self, directory: Path, clusters: list[str]) -> None:
        self.dir = directory
        up = subprocess.run([*MESHOPS, "sandbox", "up", "--dir", str(directory), "--scenario", "default",
                             "--clusters", ",".join(clusters), "--istio", "1.24.1",
                             "--istio-versions", "1.24.1,1.25.2", "--rollout-seconds", "0.05"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        if up.returncode != 0:
            sys.exit(f"sandbox up failed: {up.stderr[-2000:]}")
        self.env = dict(os.environ)
        for line in (directory / "env").read_text().splitlines():
            m = re.match(r'export (\w+)="(.*)"$', line.strip())
            if m:
                self.env[m.group(1)] = m.group(2).replace("$PATH", self.env.get("PATH", ""))
        # A token meshops must never write down: checked in every state file and the mirror.
        kubeconfig, self.token = chaos_kubeconfig(directory)
        self.secrets = {"kubeconfig token": self.token}
        self.env.update(KUBECONFIG=str(kubeconfig), MESHOPS_LOG_FORMAT="json", PYTHONPATH=str(ROOT))

    def down(self) -> None:
        subprocess.run([*MESHOPS, "sandbox", "down", "--dir", str(self.dir)], cwd=ROOT, capture_output=True,
                       timeout=60, check=False)

    def state(self, cluster: str) -> Path:
        return self.dir / f"state-{cluster}"

    def argv(self, cluster: str, *args: str) -> list[str]:
        return [*MESHOPS, "--context", cluster, "--state-dir", str(self.state(cluster)), *args]

    def run(self, cluster: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(cluster, *args), cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def kubectl(self, cluster: str, *args: str) -> Any:
        for attempt in range(5):  # injected faults hit kubectl too
            out = subprocess.run(["kubectl", "--context", cluster, *args, "-o", "json"], env=self.env,
                                 capture_output=True, text=True, timeout=60, check=False)
            if out.returncode == 0:
                return json.loads(out.stdout)
            if "NotFound" in out.stderr:
                return None
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr[-500:]}")

    def fault(self, cluster: str, specs: list[str]) -> None:
        if specs:
            subprocess.run([*MESHOPS, "sandbox", "fault", "--dir", str(self.dir), "--cluster", cluster, *specs],
                           cwd=ROOT, env=self.env, capture_output=True, timeout=30, check=True)

    def clear(self) -> None:
        subprocess.run([*MESHOPS, "sandbox", "fault", "--dir", str(self.dir), "--clear"], cwd=ROOT, env=self.env,
                       capture_output=True, timeout=30, check=True)

    def writes(self, cluster: str) -> int:
        path = self.dir / f"audit-{cluster}.jsonl"
        if not path.exists():
            return 0
        n = 0
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("verb") in WRITES and str(r.get("user_agent", "")).startswith(("meshops", "istioctl")):
                n += 1
        return n


# ---- the mesh, read with kubectl -------------------------------------------------------------


def mesh(sb: Sandbox, cluster: str) -> dict[str, Any]:
    deps = sb.kubectl(cluster, "get", "deployments", "-n", "istio-system")["items"]
    istiods = {}
    for d in deps:
        labels = d["metadata"].get("labels") or {}
        if labels.get("app") == "istiod":
            rev = labels.get("istio.io/rev", "default")
            istiods[rev] = (d.get("status") or {}).get("readyReplicas", 0) or 0
    hooks = sb.kubectl(cluster, "get", "mutatingwebhookconfigurations")["items"]
    tags = {}
    for h in hooks:
        labels = h["metadata"].get("labels") or {}
        if labels.get("istio.io/tag"):
            tags[labels["istio.io/tag"]] = labels.get("istio.io/rev", "default")
    cms = sb.kubectl(cluster, "get", "configmaps", "-n", "istio-system")["items"]
    meshes = {}
    for cm in cms:
        name = cm["metadata"]["name"]
        if name == "istio" or (name.startswith("istio-") and "mesh" in (cm.get("data") or {})
                               and not name.startswith("istio-sidecar")):
            meshes[name] = (cm.get("data") or {}).get("mesh")
    return {"istiods": istiods, "tags": tags, "meshes": meshes, "gateways": [
        d for d in deps if (d["metadata"].get("labels") or {}).get("istio") == "ingressgateway"]}


def _mesh_settings(text: str | None) -> Any:
    """The mesh config as settings: the revision's own istiod address is the revision's, not a setting."""
    import yaml

    data = yaml.safe_load(text or "") or {}
    (data.get("defaultConfig") or {}).pop("discoveryAddress", None)
    return data


def pod_revision(pod: dict[str, Any]) -> str | None:
    ann = pod["metadata"].get("annotations") or {}
    if "sidecar.istio.io/status" not in ann:
        return None
    if ann.get("istio.io/rev"):
        return str(ann["istio.io/rev"])
    try:
        return str(json.loads(ann["sidecar.istio.io/status"]).get("revision") or "default")
    except ValueError:
        return "default"


def check_invariants(sb: Sandbox, o: Outcome, original: dict[str, Any]) -> list[str]:
    c = o.plan.cluster
    bad: list[str] = []
    now = mesh(sb, c)
    running = {rev for rev, ready in now["istiods"].items() if ready > 0}
    selectable = set(now["istiods"]) | set(now["tags"])
    for ns in sb.kubectl(c, "get", "namespaces")["items"]:
        rev = (ns["metadata"].get("labels") or {}).get("istio.io/rev")
        if rev and rev not in selectable:
            bad.append(f"namespace {ns['metadata']['name']} selects missing revision {rev}")
    for pod in sb.kubectl(c, "get", "pods", "-A")["items"]:
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        rev = pod_revision(pod)
        if rev is not None and rev not in running:
            bad.append(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} runs a proxy of {rev}, "
                       "which has no running istiod")
    base = _mesh_settings(original["meshes"].get("istio"))
    for name, text in now["meshes"].items():
        if _mesh_settings(text) != base:
            bad.append(f"mesh config {name} differs from the original")
    for gw in now["gateways"]:
        st, spec = gw.get("status") or {}, gw.get("spec") or {}
        if (st.get("readyReplicas") or 0) < (spec.get("replicas") or 1):
            bad.append(f"gateway {gw['metadata']['name']} not Ready")
        gw_rev = ((spec.get("template") or {}).get("metadata") or {}).get("labels", {}).get("istio.io/rev", "default")
        if gw_rev not in running and now["tags"].get(gw_rev) not in running:
            bad.append(f"gateway {gw['metadata']['name']} on revision {gw_rev} with no running istiod")
    if o.status == "rolled_back" and set(now["istiods"]) != set(original["istiods"]):
        bad.append(f"revisions after rollback {sorted(now['istiods'])} != original {sorted(original['istiods'])}")
    lease = sb.kubectl(c, "get", "lease", "-n", "meshops-system", "meshops-run-lock")
    if lease is not None and o.run_id is not None:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        paused = ((lease["metadata"].get("annotations") or {}).get("meshops.dev/paused-run"))
        if paused or (holder and _lease_live(spec)):
            bad.append(f"run Lease still held by {holder or paused}")
    if o.run_id is not None:
        bad += check_journal(sb, c, o.run_id)
    return bad


def _lease_live(spec: dict[str, Any]) -> bool:
    from datetime import UTC, datetime

    renewed = spec.get("renewTime")
    if not renewed:
        return False
    when = datetime.strptime(renewed[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return when + float(spec.get("leaseDurationSeconds") or 0) > time.time()


def check_journal(sb: Sandbox, cluster: str, run_id: str) -> list[str]:
    bad = []
    state = sb.state(cluster)
    local_path = state / "runs" / run_id / "journal.jsonl"
    local = [json.loads(line) for line in local_path.read_text().splitlines() if line.strip()] if local_path.exists() else []
    index = sb.kubectl(cluster, "get", "configmap", "-n", "meshops-system", f"meshops-run-{run_id}")
    mirrored: list[dict[str, Any]] = []
    texts = []
    if index is None:
        bad.append("no journal mirror in the cluster")
    else:
        texts.append(json.dumps(index))
        n = 0
        while True:
            chunk = sb.kubectl(cluster, "get", "configmap", "-n", "meshops-system", f"meshops-run-{run_id}-j{n}")
            if chunk is None:
                break
            texts.append(json.dumps(chunk))
            mirrored += [json.loads(line) for line in (chunk.get("data") or {}).get("journal.jsonl", "").splitlines()
                         if line.strip()]
            n += 1
        if mirrored != local:
            bad.append(f"journal mirror ({len(mirrored)} records) != local journal ({len(local)} records)")
    for what, value in sb.secrets.items():
        for p in state.rglob("*"):
            if p.is_file() and value in p.read_text(errors="replace"):
                bad.append(f"the {what} is in {p.relative_to(sb.dir)}")
        if any(value in t for t in texts):
            bad.append(f"the {what} is in the journal mirror")
    return bad


# ---- one run -----------------------------------------------------------------------------------


def status_of(sb: Sandbox, cluster: str, run_id: str) -> str:
    sys.path.insert(0, str(ROOT))
    from meshops.domain.runlog import RunState

    path = sb.state(cluster) / "runs" / run_id / "journal.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return str(RunState.replay(run_id, records).status)


def steal_lease(sb: Sandbox, cluster: str) -> bool:
    try:
        lease = sb.kubectl(cluster, "get", "lease", "-n", "meshops-system", "meshops-run-lock")
    except RuntimeError:
        return False
    if lease is None or not (lease.get("spec") or {}).get("holderIdentity"):
        return False
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    patch = {"spec": {"holderIdentity": "thief@elsewhere/1", "renewTime": now, "leaseDurationSeconds": 3}}
    out = subprocess.run(["kubectl", "--context", cluster, "-n", "meshops-system", "patch", "lease",
                          "meshops-run-lock", "--type", "merge", "-p", json.dumps(patch)],
                         env=sb.env, capture_output=True, text=True, timeout=30, check=False)
    return out.returncode == 0


def _bad_exit(what: str, code: int, err: str) -> list[str]:
    """A crash, or a rollback that did not finish, is a finding whatever the end state."""
    if "internal error" in err or code not in (0, 1, 2, 3, 4, 130):
        return [f"{what} crashed (exit {code}): {err.strip().splitlines()[-1][:200] if err.strip() else ''}"]
    if code == 3:
        return [f"{what}: the rollback did not finish (exit 3): {err.strip().splitlines()[-1][:200]}"]
    return []


def one_run(sb: Sandbox, plan: Plan, rng: random.Random) -> Outcome:
    o = Outcome(plan=plan)
    c = plan.cluster
    original = mesh(sb, c)
    sb.fault(c, plan.faults)
    mark = sb.writes(c)
    proc = subprocess.Popen(sb.argv(c, *UPGRADE), cwd=ROOT, env=sb.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    started, stolen = time.monotonic(), False
    killed = False
    while proc.poll() is None and time.monotonic() - started < 240:
        if plan.steal_lease_after is not None and not stolen and time.monotonic() - started > plan.steal_lease_after:
            stolen = steal_lease(sb, c)
            o.history.append("lease stolen" if stolen else "lease not held yet")
        if plan.kill_after_writes is not None and sb.writes(c) - mark >= plan.kill_after_writes:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    if proc.poll() is None and not killed:
        os.killpg(proc.pid, signal.SIGKILL)
        killed = True
    code = proc.wait(timeout=30)
    o.history.append(f"run: {'SIGKILL' if killed else f'exit {code}'} after {sb.writes(c) - mark} writes")
    if not killed and code != 0:
        err = proc.stderr.read() if proc.stderr else ""
        o.violations += _bad_exit("run", code, err)
        o.history.append(f"stderr: {err.strip().splitlines()[-1][:200] if err.strip() else ''}")
        if code not in (1, 4, 130):
            (sb.dir.parent / f"meshops-chaos-run-{plan.index}-{plan.cluster}.stderr").write_text(err)
    sb.clear()
    runs = sb.state(c) / "runs"
    o.run_id = sorted(p.name for p in runs.iterdir())[-1] if runs.exists() and any(runs.iterdir()) else None
    if o.run_id is None:
        o.status = "never started"
        o.violations = check_invariants(sb, o, original)
        return o
    action = plan.first_action
    for attempt in range(8):
        o.status = status_of(sb, c, o.run_id)
        # A killed run is always asked once more, as its operator would: the kill may have come
        # between its last record and its exit (lock still held, mirror a record behind).
        if o.status in TERMINAL and (attempt or not killed or o.status == "refused"):
            break
        if o.status == "succeeded":
            action = "resume"
        elif o.status == "rolled_back":
            action = "rollback"
        if o.status in ("frozen", "failed", "rollback_failed", "rolling_back", "abandoned"):
            action = "rollback"
        out = sb.run(c, action, o.run_id)
        o.history.append(f"{action}: exit {out.returncode}")
        o.violations += _bad_exit(action, out.returncode, out.stderr)
        if out.returncode not in (0, 1, 4):
            o.history.append(f"stderr: {out.stderr.strip().splitlines()[-1][:200] if out.stderr.strip() else ''}")
            (sb.dir.parent / f"meshops-chaos-run-{plan.index}-{action}.stderr").write_text(out.stderr)
        if out.returncode == 4:
            time.sleep(3)  # a stolen Lease expires after 3 s
        action = rng.choice(["resume", "rollback"]) if action == "resume" else "rollback"
    o.status = status_of(sb, c, o.run_id)
    if o.status not in TERMINAL:
        o.violations.append(f"run did not end: {o.status}")
    o.violations += check_invariants(sb, o, original)
    return o


def chaos(runs: int, seed: int, batch: int, keep: bool, out: Any = sys.stdout, kind: str = "canary") -> list[Any]:
    """``runs`` runs of ``kind`` (canary, switchover, or both: alternating, canary first)."""
    kinds = [kind] * runs if kind != "both" else ["canary" if i % 2 == 0 else "switchover" for i in range(runs)]
    # One random stream per kind: the canary runs of a seed are the same whatever --kind says.
    rng, sw_rng = random.Random(seed), random.Random(f"switchover-{seed}")
    results: list[Any] = []
    print(f"chaos: seed {seed}, {runs} runs ({kind})", file=out, flush=True)
    n_canary, canary_done = kinds.count("canary"), 0
    sb: Sandbox | None = None
    left: list[str] = []
    world: Any = None

    def close(box: Any) -> None:
        if keep:
            print(f"sandbox kept in {box.dir}", file=out)
        else:
            box.down()
            shutil.rmtree(box.dir, ignore_errors=True)

    try:
        for index, k in enumerate(kinds):
            t0 = time.monotonic()
            if k == "switchover":
                sys.path.insert(0, str(Path(__file__).resolve().parent))
                import chaos_switchover as cs

                if world is None:
                    world = cs.World(Path(tempfile.mkdtemp(prefix=f"meshops-chaos-sw-{seed}-")))
                so = cs.one_run(world, cs.make_plan(sw_rng, index), sw_rng)
                results.append(so)
                print(cs.describe(so, time.monotonic() - t0), file=out, flush=True)
                for v in so.violations:
                    print(f"  VIOLATION (seed {seed}, run {index}): {v}", file=out, flush=True)
                continue
            if not left:
                if sb is not None:
                    close(sb)
                    sb = None
                n = min(batch, n_canary - canary_done)
                left = [f"c{canary_done + i}" for i in range(n)]
                sb = Sandbox(Path(tempfile.mkdtemp(prefix=f"meshops-chaos-{seed}-")), list(left))
            assert sb is not None
            plan = make_plan(rng, index, left.pop(0))
            o = one_run(sb, plan, rng)
            canary_done += 1
            results.append(o)
            kinds_text = ", ".join(f.split(",")[0] for f in plan.faults) or "no faults"
            print(f"run {plan.index:3d} [{kinds_text}{'; lease stolen' if plan.steal_lease_after else ''}; "
                  f"kill after {plan.kill_after_writes or '-'} writes] -> {o.status} "
                  f"({'; '.join(o.history)}) {time.monotonic() - t0:.1f}s", file=out, flush=True)
            for v in o.violations:
                print(f"  VIOLATION (seed {seed}, run {plan.index}): {v}", file=out, flush=True)
    finally:
        if sb is not None:
            close(sb)
        if world is not None:
            close(world)
    return results


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def summary(results: list[Any], seed: int, out: Any = sys.stdout) -> int:
    """Per kind: how the runs ended, the failure kinds and kill points exercised; then the violations."""
    for kind in ("canary", "switchover"):
        mine = [o for o in results if isinstance(o, Outcome) == (kind == "canary")]
        if not mine:
            continue
        kinds: dict[str, int] = {}
        kills: dict[str, int] = {}
        ends: dict[str, int] = {}
        for o in mine:
            _count(ends, o.status)
            if kind == "canary":
                for f in o.plan.faults:
                    _count(kinds, f.split(",")[0])
                if o.plan.steal_lease_after:
                    _count(kinds, "lease-stolen")
                if o.plan.kill_after_writes:
                    _count(kinds, "sigkill")
                    _count(kills, f"after write #{o.plan.kill_after_writes}")
                continue
            for f in o.plan.fault_kinds():
                _count(kinds, f)
            for k, v in o.injected.items():
                _count(kinds, f"route53-{k} requests hit", v)
            if o.plan.kill is not None:
                _count(kinds, "sigkill")
                _count(kills, f"{o.plan.kill[0]}{'' if o.killed else ' (not reached)'}")
        print(f"seed {seed} {kind}: {len(mine)} runs; ended {ends}; failure kinds exercised: "
              + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())), file=out)
        print(f"seed {seed} {kind}: kill points: " + (", ".join(f"{k} x{v}" for k, v in sorted(kills.items())) or "none"),
              file=out)
    violations = sum(len(o.violations) for o in results)
    print(f"seed {seed}: {violations} invariant violation(s)", file=out)
    return violations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch", type=int, default=5, help="clusters per sandbox (one run each)")
    ap.add_argument("--keep", action="store_true", help="leave each sandbox running")
    ap.add_argument("--kind", choices=["canary", "switchover", "both"], default="both",
                    help="which runs (both: alternating)")
    args = ap.parse_args()
    sys.modules.setdefault("chaos", sys.modules["__main__"])  # chaos_switchover imports this module by name
    # Stopped with SIGTERM (a background run ignores SIGINT): still take the sandboxes down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    results = chaos(args.runs, seed, args.batch, args.keep, kind=args.kind)
    sys.exit(1 if summary(results, seed) else 0)


if __name__ == "__main__":
    main()
