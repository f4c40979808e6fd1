"""``python -m meshops.sandbox``: the sandbox's own command line (what ``sandbox up`` runs)."""

from __future__ import annotations

from .cli import sandbox

if __name__ == "__main__":
    sandbox(prog_name="python -m meshops.sandbox")
