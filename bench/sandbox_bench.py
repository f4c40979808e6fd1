"""Sandbox benchmark: build 10,000 pods from 2,000 Deployments, then time list/get/patch.

    /work/venv/bin/python bench/sandbox_bench.py [--namespaces 200] [--deployments 2000] [--replicas 5]

Starts ``python -m meshops.sandbox serve`` (one cluster) in a temp dir, creates the Deployments
over HTTP and waits until every pod is Ready (the startup figure), then times requests over a
keep-alive loopback connection (raw http.client, so the figures are the server's, not a client
library's) and reads the server's RSS from /proc. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _support import SANDBOX, ApiConnection, percentiles, rss_mb, wait_serving


def request(conn: ApiConnection, method: str, path: str, body: Any = None, content_type: str = "application/json") -> tuple[int, bytes]:
    return conn.request(method, path, body, content_type)


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}},
        },
    }


def timed(conn: ApiConnection, n: int, make: Any) -> list[float]:
    samples = []
    for i in range(n):
        method, path, body, content_type = make(i)
        start = time.perf_counter()
        status, _ = request(conn, method, path, body, content_type)
        samples.append((time.perf_counter() - start) * 1000)
        if status >= 300:
            raise SystemExit(f"{method} {path} -> {status}")
    return samples


def report(name: str, samples: list[float]) -> None:
    p50, p95 = percentiles(samples)
    print(f"  {name:<58} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--rollout-seconds", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    started = time.monotonic()
    server = subprocess.Popen(
        [*SANDBOX, "serve", "--dir", str(directory), "--clusters", "bench",
         "--rollout-seconds", str(args.rollout_seconds)],
        stdout=subprocess.DEVNULL, stderr=open(directory / "serve.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_serving(directory, server)

        def connect() -> ApiConnection:
            return ApiConnection(directory / "kubeconfig", "bench")
        ready_at = time.monotonic()
        print(f"sandbox process ready in {ready_at - started:.2f} s (rss {rss_mb(server.pid):.0f} MB)")

        per_ns = args.deployments // args.namespaces
        namespaces = [f"ns-{i:03d}" for i in range(args.namespaces)]

        def create(chunk: list[str]) -> None:
            conn = connect()
            for ns in chunk:
                request(conn, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
                for j in range(per_ns):
                    status, body = request(conn, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(f"app-{j:02d}", args.replicas))
                    if status != 201:
                        raise SystemExit(f"create failed: {status} {body[:200]!r}")

        threads = [threading.Thread(target=create, args=(namespaces[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        created_at = time.monotonic()
        print(f"created {args.namespaces} namespaces and {per_ns * args.namespaces} deployments over HTTP in {created_at - ready_at:.2f} s")
        conn = connect()
        wanted = per_ns * args.namespaces * args.replicas
        while True:
            _, body = request(conn, "GET", "/apis/apps/v1/deployments")
            items = json.loads(body)["items"]
            available = sum((d.get("status") or {}).get("availableReplicas", 0) for d in items)
            if available >= wanted and all(d["status"].get("observedGeneration") == d["metadata"]["generation"] for d in items):
                break
            time.sleep(0.5)
        done = time.monotonic()
        _, body = request(conn, "GET", "/api/v1/pods?limit=1")
        pods = json.loads(body)["metadata"].get("remainingItemCount", 0) + 1
        print(f"all {wanted} pods Ready ({pods} pods in the store) {done - created_at:.2f} s after the last create")
        print(f"STARTUP of that state (process start -> every Deployment available): {done - started:.2f} s")
        print(f"RSS after startup: {rss_mb(server.pid):.0f} MB")

        n = args.samples
        ns = namespaces
        print("request latency over one keep-alive loopback connection:")
        report("GET one deployment", timed(conn, n, lambda i: ("GET", f"/apis/apps/v1/namespaces/{ns[i % len(ns)]}/deployments/app-00", None, "")))
        report(f"LIST pods in a namespace ({per_ns * args.replicas} pods)", timed(conn, n, lambda i: ("GET", f"/api/v1/namespaces/{ns[i % len(ns)]}/pods", None, "")))
        report(f"LIST pods by label selector ({args.replicas} pods)", timed(conn, n, lambda i: ("GET", f"/api/v1/namespaces/{ns[i % len(ns)]}/pods?labelSelector=app%3Dapp-01", None, "")))
        report("LIST deployments in a namespace", timed(conn, n, lambda i: ("GET", f"/apis/apps/v1/namespaces/{ns[i % len(ns)]}/deployments", None, "")))
        report("LIST pods cluster-wide, limit=500 (first page)", timed(conn, 50, lambda i: ("GET", "/api/v1/pods?limit=500", None, "")))
        report("PATCH deployment label (merge patch)", timed(conn, n, lambda i: (
            "PATCH", f"/apis/apps/v1/namespaces/{ns[i % len(ns)]}/deployments/app-01", {"metadata": {"labels": {"bench": str(i)}}}, "application/merge-patch+json")))
        pod_names = []
        for namespace in ns:
            _, body = request(conn, "GET", f"/api/v1/namespaces/{namespace}/pods?limit=1")
            pod_names.append((namespace, json.loads(body)["items"][0]["metadata"]["name"]))
        report("PATCH pod annotation (strategic merge patch)", timed(conn, n, lambda i: (
            "PATCH", "/api/v1/namespaces/{}/pods/{}".format(*pod_names[i % len(pod_names)]),
            {"metadata": {"annotations": {"bench": str(i)}}}, "application/strategic-merge-patch+json")))
        report("PATCH deployment image (strategic merge patch: a rollout)", timed(conn, 50, lambda i: (
            "PATCH", f"/apis/apps/v1/namespaces/{ns[i % len(ns)]}/deployments/app-02",
            {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": f"app:{i + 2}"}]}}}}, "application/strategic-merge-patch+json")))
        start = time.perf_counter()
        _, body = request(conn, "GET", "/api/v1/pods")
        print(f"  LIST all {len(json.loads(body)['items'])} pods cluster-wide: {(time.perf_counter() - start) * 1000:.0f} ms, {len(body) / 1e6:.1f} MB")
        print(f"RSS at the end: {rss_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
