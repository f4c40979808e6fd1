"""A 1,000-step no-op playbook, journaled to disk: total time (target <= 2 s).

    python bench/engine.py [--steps 1000]

Also prints the same playbook's time with a journal that does not fsync (the floor set
by the engine's own work), so the cost of durability is visible.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import structlog

from meshops.engine.journal import LocalStateStore
from meshops.engine.playbook import load_playbook_text
from meshops.engine.runner import Engine


class NoSyncStore(LocalStateStore):
    def append(self, run_id, records):  # type: ignore[no-untyped-def]
        import json
        import os

        data = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records).encode()
        with self._lock:
            os.write(self._fd(run_id), data)


def playbook(n: int) -> str:
    steps = "".join(f"  - id: s{i}\n    uses: core.noop\n    with: {{values: {{i: {i}}}}}\n" for i in range(n))
    return f"apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {{name: bench, lock: false}}\nsteps:\n{steps}"


def run(store_cls: type[LocalStateStore], text: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        loaded = load_playbook_text(text, path="bench.yaml")
        t1 = time.perf_counter()
        Engine(store=store_cls(Path(tmp))).start(loaded, {})
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    text = playbook(args.steps)
    load_s, run_s = run(LocalStateStore, text)
    _, nosync_s = run(NoSyncStore, text)
    print(f"steps={args.steps} validate={load_s:.3f}s run(journaled, fdatasync)={run_s:.3f}s "
          f"total={load_s + run_s:.3f}s target<=2s ratio_to_target={(load_s + run_s) / 2:.2f}")
    print(f"run(no fsync, same engine)={nosync_s:.3f}s durability_cost={run_s / nosync_s:.2f}x")


if __name__ == "__main__":
    main()
