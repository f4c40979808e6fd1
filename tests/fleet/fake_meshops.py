"""A stand-in for the ``meshops`` child the fleet executor starts, for fast executor tests.

It keeps meshops's contract as the fleet sees it: global options, one run journaled in
``--state-dir`` through the engine's own store, the exit codes of README "Exit codes", and
``resume RUN_ID`` / ``rollback RUN_ID``. What each cluster does comes from the JSON file named
by $FAKE_FLEET_PLAN: {"c2": {"exit": 1, "sleep": 0.5}}; every action is appended to
$FAKE_FLEET_LOG as "verb cluster run_id".
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from meshops.engine.journal import Journal, LocalStateStore, new_run_id

STATUS = {0: "succeeded", 1: "rolled_back", 3: "rollback_failed", 130: "interrupted"}


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    while argv and argv[0].startswith("--"):
        opts[argv[0]] = argv[1]
        argv = argv[2:]
    cluster, store = opts["--context"], LocalStateStore(opts["--state-dir"])
    with open(os.environ["FAKE_FLEET_PLAN"]) as fh:
        plan = json.loads(fh.read()).get(cluster, {})
    verb = argv[0]
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    if verb in ("resume", "rollback"):
        run_id = argv[1]
    else:
        run_id = new_run_id(cluster, time.time())
        store.create_run(run_id, playbook_text="{}", playbook_path="fake")
        Journal(store, run_id).write("run_started", name=verb, params={"args": argv[1:]})
    with open(os.environ["FAKE_FLEET_LOG"], "a") as fh:
        fh.write(f"{verb} {cluster} {run_id}\n")
    if verb == "rollback":
        Journal(store, run_id).write("run_finished", status="rolled_back")
        return int(plan.get("rollback_exit", 0))
    end = time.time() + float(plan.get("sleep", 0))
    while time.time() < end:
        if stopped:
            Journal(store, run_id).write("run_finished", status="interrupted")
            return 130
        time.sleep(0.02)
    code = int(plan.get("exit", 0))
    Journal(store, run_id).write("run_finished", status=STATUS.get(code, "failed"))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
