"""A client-side token bucket, as client-go and istioctl have (istioctl: 50 QPS, burst 100).

The Python kubernetes client has none, and an upgrade that restarts thousands of
workloads must not be what trips the API server's priority and fairness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, *, qps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps, self.burst = qps, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self.waited = 0.0  # total seconds callers spent waiting, for benchmarks

    def pause_until(self, when: float) -> None:
        """Hold every caller until ``when`` (a server's Retry-After applies to all requests)."""
        with self._lock:
            self._paused_until = max(self._paused_until, when)

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
                self._stamp = now
                if now < self._paused_until:
                    delay = self._paused_until - now
                # Within float rounding of a whole token counts as one: a sleep of exactly the
                # computed delay may refill 0.9999999, and the next delay would round to nothing.
                elif self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                else:
                    delay = (1 - self._tokens) / self.qps
            self.waited += delay
            self._sleep(delay)
