"""Step types: each one a small, idempotent action with a plan and an undo."""
