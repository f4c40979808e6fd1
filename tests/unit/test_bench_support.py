"""bench/_support.py reads DIR/env as `source` would: the sandbox's writer and the bench's reader agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from meshops.sandbox.runtime import shell_quote

ROOT = Path(__file__).resolve().parents[2]


def _support() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_support", ROOT / "bench" / "_support.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_file_reads_back_what_the_sandbox_writes(tmp_path: Path) -> None:
    values = {
        "KUBECONFIG": "/tmp/a dir/kubeconfig",
        "ODD": 'quote " dollar $HOME back\\slash `tick`',
        "PATH": "/tmp/sb/bin:$PATH",
    }
    env_path = tmp_path / "env"
    env_path.write_text("".join(f"export {k}={shell_quote(v)}\n" for k, v in values.items()))
    env = _support().env_file(env_path, {"PATH": "/usr/bin", "KEEP": "1"})
    assert env["KUBECONFIG"] == values["KUBECONFIG"]
    assert env["ODD"] == values["ODD"]  # escaped $HOME stays literal
    assert env["PATH"] == "/tmp/sb/bin:/usr/bin"  # the one expansion the writer asks for
    assert env["KEEP"] == "1"
