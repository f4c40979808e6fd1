"""Keeping secrets out of logs, journals and reports.

Two nets: keys whose names say they hold a secret, and values known to be secret
(params declared ``secret: true``, tokens read from a kubeconfig). Both are applied
wherever data leaves the process, so a step never has to remember to redact.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|credential|authorization|api[-_]?key|access[-_]?key|private[-_]?key|"
    r"session[-_]?key|client[-_]?key[-_]?data|client[-_]?certificate[-_]?data|bearer)",
    re.IGNORECASE,
)
# Shapes that are secret wherever they appear, whatever the key: AWS access key ids,
# bearer headers and JWTs (service-account tokens).
_SECRET_VALUE = re.compile(
    r"(AKIA|ASIA)[A-Z0-9]{16}|(?i:bearer\s+)[A-Za-z0-9._~+/=-]{8,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
)


def _is_scalar_value(value: object) -> bool:
    return value not in (None, "") and not isinstance(value, Mapping | list | tuple)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


class SecretRegistry:
    """Values that must never be written out, wherever they turn up."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: object) -> None:
        text = str(value)
        # Short values ("1", "true", "sandbox") would blank out words all over a log or a
        # journal (and corrupt hostnames in step outputs); real tokens and keys are longer.
        if len(text) >= 8:
            with self._lock:
                self._values.add(text)

    def add_all(self, values: Iterable[object]) -> None:
        for v in values:
            self.add(v)

    def scrub_text(self, text: str) -> str:
        text = _SECRET_VALUE.sub(REDACTED, text)
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for v in values:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

    def scrub(self, data: Any) -> Any:
        """A copy of ``data`` with secret keys and known secret values replaced."""
        if isinstance(data, Mapping):
            return {
                # Only a scalar under a secret-looking key is a secret: a mapping or list there is
                # structure (a projected volume's `serviceAccountToken`, `values.global.sds.token`,
                # a volume's `secret: {secretName}`), and blanking it corrupts the backups that
                # rollback restores from the journal.
                k: (REDACTED if isinstance(k, str) and is_secret_key(k) and _is_scalar_value(v)
                    else self.scrub(v))
                for k, v in data.items()
            }
        if isinstance(data, list | tuple):
            return [self.scrub(v) for v in data]
        if isinstance(data, str):
            return self.scrub_text(data)
        return data


# One registry per process: secrets learnt anywhere (a param, a kubeconfig) are hidden everywhere.
SECRETS = SecretRegistry()
