"""Fencing: no write leaves this process once the run may have lost its lock.

The lock renewer reports a renewal that failed or found another holder; ``Fence.check``
also refuses once the last good renewal is older than the lease allows (a stuck renewer
proves nothing). Every write a step makes goes through ``FencedDrivers``, which calls
``Fence.check`` before each method that changes something, so a run that lost its lock
stops at its next write, not at the end of the wave.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from meshops.domain.locks import LockLost

# Driver methods that change the world (kube, istioctl, Route53); everything else only reads.
WRITE_METHODS = frozenset({
    "create", "replace", "patch", "delete", "apply", "server_side_apply", "delete_collection",
    "run",  # istioctl
    "change", "create_health_check", "delete_health_check",  # Route53
})


class Fence:
    """Whether the run may still write. ``verify`` (the lock's own look at who holds it) runs
    at most every ``verify_every`` seconds from ``check``, so a stolen lock is noticed within
    that time however the renewer is scheduled, at the cost of one read per interval."""

    def __init__(self, *, clock: Callable[[], float], duration: float | None = None,
                 verify: Callable[[], None] | None = None, verify_every: float = 1.0) -> None:
        self._clock = clock
        self.duration = duration
        self._lost: str | None = None
        self._renewed = clock()
        self._mu = threading.Lock()
        self._verify = verify
        self._verify_every = verify_every
        self._verified = clock()
        self._verify_mu = threading.Lock()

    def verify_now(self) -> None:
        """Look at the lock now; a changed holder loses the fence, a failed look proves nothing."""
        if self._verify is None:
            return
        with self._verify_mu:
            try:
                self._verify()
            except LockLost as exc:
                self.lose(exc.message)
            except Exception:
                return
            self._verified = self._clock()

    def renewed(self) -> None:
        with self._mu:
            self._renewed = self._clock()

    def lose(self, reason: str) -> None:
        with self._mu:
            self._lost = self._lost or reason

    def reset(self) -> None:
        with self._mu:
            self._lost, self._renewed = None, self._clock()

    @property
    def lost(self) -> str | None:
        with self._mu:
            if self._lost is None and self.duration is not None and self._clock() - self._renewed > self.duration:
                self._lost = f"the lock was not renewed for {self._clock() - self._renewed:.0f}s (lease {self.duration:.0f}s)"
            return self._lost

    def check(self) -> None:
        if self._verify is not None and self._clock() - self._verified > self._verify_every:
            self.verify_now()
        reason = self.lost
        if reason is not None:
            raise LockLost(f"lock lost: {reason}; stopped before the next write")


class _Fenced:
    """A driver whose write methods check the fence first; everything else passes through."""

    def __init__(self, inner: Any, fence: Fence) -> None:
        self._inner, self._fence = inner, fence

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in WRITE_METHODS and callable(attr):
            def fenced(*args: Any, **kwargs: Any) -> Any:
                self._fence.check()
                return attr(*args, **kwargs)
            return fenced
        return attr


class FencedDrivers:
    """``ctx.drivers`` for a run that holds a lock: the drivers that write (Kubernetes,
    istioctl, Route53) are fenced; Prometheus and HTTP probes only read and pass through."""

    def __init__(self, inner: Any, fence: Fence) -> None:
        self._inner, self._fence = inner, fence

    @property
    def kube(self) -> Any:
        return _Fenced(self._inner.kube, self._fence)

    @property
    def unfenced(self) -> Any:
        return self._inner

    def kube_for(self, context: str | None = None) -> Any:
        return _Fenced(self._inner.kube_for(context), self._fence)

    def istioctl(self, version: str | None = None, **kw: Any) -> Any:
        return _Fenced(self._inner.istioctl(version, **kw), self._fence)

    def route53(self) -> Any:
        return _Fenced(self._inner.route53(), self._fence)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # settings, caches, istioctl_versions, prometheus, http
