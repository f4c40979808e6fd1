"""Keeping secrets out of logs, journals and reports.

Two nets: keys whose names say they hold a secret, and values known to be secret
(params declared ``secret: true``, values templated from them, tokens read from a
kubeconfig, AWS credentials). Both are applied wherever data leaves the process, so a
step never has to remember to redact.

Each run has its own ``SecretRegistry`` (the engine makes one per start/resume/rollback
and activates it for the log processor); credentials a driver learns about the process
itself (a kubeconfig token, AWS keys) live in the process-wide ``CREDENTIALS`` registry
that every run registry consults. Nothing of one run's secrets outlives that run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
# At or above this length a secret is replaced wherever it occurs, even inside a longer
# word: a random 8+ character token does not occur by chance. A shorter one ("hunter2",
# "42") would, so it is replaced only where it stands alone: a whole value, or a token
# not touching a letter, digit or underscore, nor joined to one by ``. - /`` (so "42" goes
# in "pin=42" and "the pin is 42.", but not in "10.42.0.1" or "istio-1-42").
LONG_SECRET = 8
_JOIN = r"[.\-/]"  # joins two word parts ("10.42", "istio-1-42"); a sentence's full stop does not


def _is_scalar_value(value: object) -> bool:
    return value not in (None, "") and not isinstance(value, Mapping | list | tuple)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


class SecretRegistry:
    """Values that must never be written out, wherever they turn up."""

    def __init__(self, *, parent: SecretRegistry | None = None) -> None:
        self._values: set[str] = set()
        self._short: dict[str, re.Pattern[str]] = {}
        self._lock = threading.Lock()
        self.parent = parent

    def add(self, value: object) -> None:
        """Register ``value`` whatever its length (empty values mean nothing and are ignored)."""
        if value is None or isinstance(value, bool):
            return
        text = str(value)
        if not text.strip():
            return
        with self._lock:
            if len(text) >= LONG_SECRET:
                self._values.add(text)
            else:
                self._short[text] = re.compile(
                    rf"(?<![A-Za-z0-9_])(?<![A-Za-z0-9_]{_JOIN}){re.escape(text)}(?![A-Za-z0-9_]|{_JOIN}[A-Za-z0-9_])")

    def add_all(self, values: Iterable[object]) -> None:
        for v in values:
            self.add(v)

    def __contains__(self, value: object) -> bool:
        text = str(value)
        with self._lock:
            mine = text in self._values or text in self._short
        return mine or (self.parent is not None and text in self.parent)

    def _patterns(self) -> tuple[list[str], list[re.Pattern[str]], set[str]]:
        with self._lock:
            values, short, exact = sorted(self._values, key=len, reverse=True), list(self._short.values()), set(self._short)
        if self.parent is not None:
            pv, ps, pe = self.parent._patterns()
            values, short, exact = sorted({*values, *pv}, key=len, reverse=True), short + ps, exact | pe
        return values, short, exact

    def scrub_text(self, text: str) -> str:
        text = _SECRET_VALUE.sub(REDACTED, text)
        values, short, exact = self._patterns()
        if text in exact:
            return REDACTED
        for v in values:
            if v in text:
                text = text.replace(v, REDACTED)
        for pattern in short:
            text = pattern.sub(REDACTED, text)
        return text

    def scrub(self, data: Any, *, keep: frozenset[str] = frozenset()) -> Any:
        """A copy of ``data`` with secret keys and known secret values replaced.

        ``keep`` names top-level keys left as they are (a journal record's type, step, status).
        """
        if isinstance(data, Mapping):
            return {
                # Only a scalar under a secret-looking key is a secret: a mapping or list there is
                # structure (a projected volume's `serviceAccountToken`, `values.global.sds.token`,
                # a volume's `secret: {secretName}`), and blanking it corrupts the backups that
                # rollback restores from the journal.
                k: (v if k in keep else
                    REDACTED if isinstance(k, str) and is_secret_key(k) and _is_scalar_value(v)
                    else self.scrub(v))
                for k, v in data.items()
            }
        if isinstance(data, list | tuple):
            return [self.scrub(v) for v in data]
        if isinstance(data, str):
            return self.scrub_text(data)
        return data


# Credentials of the process itself (kubeconfig tokens, AWS keys): every run registry sees them.
CREDENTIALS = SecretRegistry()

_active_lock = threading.Lock()
_active: SecretRegistry = CREDENTIALS


def active() -> SecretRegistry:
    """The registry of the run in progress (for the log processor), else the credentials alone."""
    return _active


@contextmanager
def activated(registry: SecretRegistry) -> Iterator[SecretRegistry]:
    """Make ``registry`` the active one for the duration (threads included), then restore."""
    global _active
    with _active_lock:
        previous, _active = _active, registry
    try:
        yield registry
    finally:
        with _active_lock:
            _active = previous


def register_credential(value: object) -> None:
    CREDENTIALS.add(value)
