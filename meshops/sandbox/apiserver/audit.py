"""The audit log: one JSON line per API request, faulted ones included.

Benchmarks and tests count requests from it, so every request is recorded, including those a
request filter answered and watches (recorded when the stream ends, with its whole duration).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


class AuditLog:
    def __init__(self, path: Path | None = None, *, keep: int = 10_000) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115
        self.entries: deque[dict[str, Any]] = deque(maxlen=keep)  # recent entries, for in-process readers

    def record(
        self,
        *,
        started: float,
        method: str,
        path: str,
        query: str,
        verb: str,
        content_type: str,
        status: int,
        user_agent: str,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        entry = {
            "time": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "verb": verb,
            "method": method,
            "path": path,
            "query": query,
            "content_type": content_type,
            "status": status,
            "duration_ms": round((time.time() - started) * 1000, 3),
            "user_agent": user_agent,
            "resource": resource,
            "namespace": namespace,
            "name": name,
        }
        with self._lock:
            self.entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
