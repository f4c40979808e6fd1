"""Switchover benchmarks, printing figures (no pass/fail):

1. Total wall time against the sum of bake times (target <= 1.05x): `meshops switchover` run as a
   user runs it, on the sandbox's blue-green scenario (real HTTP probes, moto Route53), timed from
   the command's start to its exit and, separately, from the run's first to its last journal record.
2. Time from the first failed probe to the rollback batch being sent (target <= one probe interval
   + 1 s): green's ingress starts answering 503 once it holds 25%; the first 503 is timestamped by
   the ingress server, the rollback batch by the proxy in front of moto (same clock, same process).
3. Route53 requests per switchover (target <= 3 per step plus setup), counted at that proxy. The
   setup runs up to the first step's read: the zone, the record and its external-dns ownership
   (read by the preflight, and again under the lock), the TXT lock's CREATE, the health checks
   (list, create, tag) and the one batch that converts the simple record to the weighted pair.
   A step is its read, its one batch and any GetChange polls. Teardown, counted apart, is what
   follows the last step: the TXT lock's release (one DELETE batch). The lock's own batches are
   never counted as a step's batch.

    python bench/switchover.py [--bake 10] [--steps 10,25,50,100] [--probe-interval 1] [--repeat 5]
                               [--skip-sandbox]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import structlog  # noqa: E402
from _support import env_file  # noqa: E402

from tests.support.switchover import Exchange, Route53Proxy  # noqa: E402

MESHOPS = [sys.executable, "-m", "meshops"]
NAME = "app.example.com."


def is_change(e: Exchange) -> bool:
    return e.method == "POST" and e.path.endswith("/rrset/") and e.status == 200


def is_lock(e: Exchange) -> bool:
    return b"_meshops-lock." in e.body


def request_counts(exchanges: list[Exchange], steps: int) -> tuple[int, list[int], int]:
    """(setup requests, requests of each step, teardown requests); see the module docstring."""
    batches = [i for i, e in enumerate(exchanges) if is_change(e) and not is_lock(e)]
    if len(batches) < steps + 1:
        return len(exchanges), [], 0
    # batches[0] converts the record (setup); each step starts with the read before its batch.
    starts = [batches[k] - 1 for k in range(1, steps + 1)]
    end = next((i for i in range(batches[-1], len(exchanges)) if is_change(exchanges[i]) and is_lock(exchanges[i])),
               len(exchanges))
    per_step = [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)]
    return starts[0], per_step, len(exchanges) - end


# ---- 1 and 3: the CLI on the sandbox ---------------------------------------------------------------


def sandbox_run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="meshops-bench-") as tmp:
        d = Path(tmp) / "sandbox"
        up = subprocess.run([*MESHOPS, "sandbox", "up", "--dir", str(d), "--scenario", "blue-green"], cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
        if up.returncode != 0:
            print("sandbox up failed:", up.stderr[-1500:])
            return
        try:
            _sandbox_run(args, d, Path(tmp))
        finally:
            subprocess.run([*MESHOPS, "sandbox", "down", "--dir", str(d)], cwd=ROOT, capture_output=True, timeout=60)


def _sandbox_run(args: argparse.Namespace, d: Path, tmp: Path) -> None:
    env = env_file(d / "env")
    kubeconfig = tmp / "kubeconfig"  # a random token: the word "sandbox" would be scrubbed from journals
    kubeconfig.write_text((d / "kubeconfig").read_text().replace("token: sandbox", f"token: {secrets.token_hex(16)}"))
    client = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL_ROUTE_53"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    zone = env["MESHOPS_SANDBOX_HOSTED_ZONE_ID"]
    # The sandbox seeds TTL 60 s, which would make every step hold >= 60 s; the bench lowers it to 1 s.
    client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT",
        "ResourceRecordSet": {"Name": NAME, "Type": "CNAME", "TTL": 1,
                              "ResourceRecords": [{"Value": env["MESHOPS_SANDBOX_INGRESS_HOST_BLUE"]}]}}]})
    proxy = Route53Proxy(upstream=env["AWS_ENDPOINT_URL_ROUTE_53"])
    state = tmp / "state"
    # Route53 through the counting proxy; ELB straight to moto. The ingress names resolve through
    # MESHOPS_CONNECT_TO from DIR/env, as for a user: no --connect-to.
    run_env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "AWS_ENDPOINT_URL_ROUTE_53": proxy.url,
               "MESHOPS_STATE_DIR": str(state), "MESHOPS_LOG_FORMAT": "json"}
    steps = [int(s) for s in args.steps.split(",")]
    cmd = [*MESHOPS, "switchover", "--from", "blue", "--to", "green", "--zone", "example.com",
           "--record", "app.example.com", "--probe", "http://app.example.com/productpage",
           "--steps", args.steps, "--bake", f"{args.bake}s", "--propagation-allowance", "0s",
           "--probe-interval", f"{args.probe_interval}s"]
    t0, wall0 = time.monotonic(), time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    proxy.close()
    if done.returncode != 0:
        print("switchover failed:", done.stderr[-2000:])
        return
    run_id = done.stdout.strip().splitlines()[-1]
    records = [json.loads(line) for line in (state / "runs" / run_id / "journal.jsonl").read_text().splitlines()]
    bakes = sum(r["outputs"]["bake_seconds"] for r in records
                if r["type"] == "step_succeeded" and r["step"].startswith("shift["))
    run_wall = records[-1]["ts"] - records[0]["ts"]
    print(f"[1] sandbox blue-green, steps {args.steps}, bake {args.bake}s, probe every {args.probe_interval}s")
    print(f"    sum of bakes            {bakes:8.2f} s")
    print(f"    run (journal first-last) {run_wall:8.2f} s   ratio {run_wall / bakes:.3f}x  (target <= 1.05x)")
    print(f"    command (start to exit)  {wall:8.2f} s   ratio {wall / bakes:.3f}x  "
          "(adds interpreter start-up and the read-only preflight)")
    before, after = records[0]["ts"] - wall0, wall0 + wall - records[-1]["ts"]
    print(f"    fixed cost: {before:.2f} s before the run (start-up, preflight, locks), {run_wall - bakes:.2f} s in "
          f"it besides the holds, {after:.2f} s after it (lock release, exit)")
    setup, per_step, teardown = request_counts(proxy.exchanges, len(steps))
    throttled = sum(1 for e in proxy.exchanges if e.status == 400)
    print(f"[3] Route53 requests: total {len(proxy.exchanges)} = setup {setup} + steps {per_step} + teardown "
          f"{teardown} (the TXT lock's release) (max {max(per_step) if per_step else '?'} per step, target <= 3); "
          f"peak {proxy.max_per_second()} in a second, burst {proxy.max_burst(10):.1f} over 10/s "
          f"(client bucket: burst 10, 10/s); throttled {throttled}")


# ---- 2: first failed probe -> rollback batch --------------------------------------------------------


def failure_latency(args: argparse.Namespace) -> None:
    from moto.server import ThreadedMotoServer

    from meshops.cli.switchover_cmds import preflight
    from meshops.domain.errors import RunFailed
    from meshops.domain.weights import RecordSet
    from meshops.engine.journal import LocalStateStore
    from meshops.engine.playbook import load_playbook, resolve_params
    from meshops.engine.runner import Engine
    from tests.support.switchover import (
        PLAYBOOK,
        Ingress,
        cluster_objects,
        drivers_for,
        params,
        seeded,
    )

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log would drown the figures
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    latencies = []
    for i in range(args.repeat):
        urllib.request.urlopen(urllib.request.Request(f"{moto}/moto-api/reset", method="POST"))
        c = boto3.client("route53", endpoint_url=moto, region_name="us-east-1")
        zone = c.create_hosted_zone(Name="example.com.", CallerReference=f"b{i}")["HostedZone"]["Id"]
        original = RecordSet(name=NAME, type="CNAME", ttl=1, values=("blue-lb.example.net",))
        c.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
            {"Action": "CREATE", "ResourceRecordSet": original.to_aws()}]})
        blue, green = Ingress("blue"), Ingress("green")
        # The load balancers' status ports, probed before the health checks are created.
        os.environ["MESHOPS_CONNECT_TO"] = (f"blue-lb.example.net:15021:127.0.0.1:{blue.port} "
                                            f"green-lb.example.net:15021:127.0.0.1:{green.port}")
        proxy = Route53Proxy(upstream=moto)
        os.environ["AWS_ENDPOINT_URL_ROUTE_53"] = proxy.url
        marked: dict[str, int] = {}

        def on_change(batch: dict[str, Any], green: Ingress = green, marked: dict[str, int] = marked,
                      proxy: Route53Proxy = proxy) -> None:
            if any(ch["ResourceRecordSet"].get("Weight") == 25 and ch["ResourceRecordSet"].get("SetIdentifier") == "green"
                   for ch in batch["Changes"]):
                green.fail(503)
                marked["after"] = len(proxy.exchanges) + 1

        proxy.on_change = on_change
        kube = {"blue": seeded("blue", cluster_objects(ingress="blue-lb.example.net")),
                "green": seeded("green", cluster_objects(ingress="green-lb.example.net"))}
        given = params(probes=["http://app.example.com/"], bake="30s", probe_interval=f"{args.probe_interval}s",
                       connect_to=[f"blue-lb.example.net:80:127.0.0.1:{blue.port}",
                                   f"green-lb.example.net:80:127.0.0.1:{green.port}"])
        with tempfile.TemporaryDirectory() as tmp:
            loaded = load_playbook(str(PLAYBOOK))
            p = resolve_params(loaded.playbook, given)
            engine = Engine(store=LocalStateStore(tmp), drivers=drivers_for(kube))
            preflight(engine, loaded, p)
            with contextlib.suppress(RunFailed):  # the run fails on purpose
                engine.start(loaded, p)
        rollback = next(e for e in proxy.exchanges[marked["after"]:] if is_change(e))
        assert green.first_failure is not None
        latencies.append(rollback.at - green.first_failure)
        for s in (blue, green, proxy):
            s.close()
    server.stop()
    bound = args.probe_interval + 1.0
    print(f"[2] first failed probe -> rollback batch sent, probe every {args.probe_interval}s, {args.repeat} runs:")
    print(f"    min {min(latencies) * 1000:.0f} ms, median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms   (target <= {bound:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bake", type=float, default=10.0, help="seconds per step")
    ap.add_argument("--steps", default="10,25,50,100")
    ap.add_argument("--probe-interval", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-sandbox", action="store_true")
    args = ap.parse_args()
    if not args.skip_sandbox:
        sandbox_run(args)
    failure_latency(args)


if __name__ == "__main__":
    main()
