"""A switchover in its own process, so a test can SIGKILL it mid-bake and resume it in another.

``python -m tests.support.switchover_child CONFIG.json start`` prints the run id on its first
line, then runs; ``... CONFIG.json resume RUN_ID`` resumes. The fake clusters are rebuilt from
the config (they are read-only for a meshops-owned switchover); Route53 comes from the
environment (moto behind the test's proxy) and the probes hit the test's ingress servers.
"""

from __future__ import annotations

import json
import sys

from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook, resolve_params
from meshops.engine.runner import Engine
from tests.support.switchover import PLAYBOOK, cluster_objects, drivers_for, seeded


def main(argv: list[str]) -> int:
    with open(argv[0]) as fh:
        config = json.load(fh)
    clusters = {ctx: seeded(ctx, cluster_objects(**spec)) for ctx, spec in config["clusters"].items()}
    engine = Engine(store=LocalStateStore(config["state_dir"]), drivers=drivers_for(clusters))
    if argv[1] == "start":
        loaded = load_playbook(str(PLAYBOOK))
        params = resolve_params(loaded.playbook, config["params"])
        # Announce the run id before the run: the engine creates it first thing.
        original = engine.store.create_run

        def create_run(run_id: str, **kw: object) -> None:
            original(run_id, **kw)  # type: ignore[arg-type]
            print(run_id, flush=True)

        engine.store.create_run = create_run  # type: ignore[method-assign]
        result = engine.start(loaded, params)
    else:
        result = engine.resume(argv[2])
    print(result.status, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
