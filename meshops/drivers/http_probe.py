"""HTTP probes: one GET with a hard timeout, against a chosen address.

A switchover probes each cluster on its own, so a probe of ``http://app.example.com/health``
can be sent to one cluster's ingress (``connect_to``) while keeping the URL's Host header
(and, for HTTPS, its SNI name and certificate check), as ``curl --connect-to`` does.
A probe never raises: every failure (refused, timed out, reset, unexpected status or body)
is a ``ProbeResult`` with ``ok=False`` and a short reason.

``MESHOPS_CONNECT_TO`` (documented in the README) holds more such overrides for every probe
meshops makes, separated by spaces or commas: ``HOST:PORT:CONNECT_HOST:CONNECT_PORT``, as curl's
``--connect-to``. An address a probe would connect to (the URL's, or a step's per-cluster
choice) that matches an entry goes to the entry's address instead. This is how a load balancer
name that does not resolve on this machine (a sandbox, a private LB behind a tunnel) stays
probeable without a flag on every command.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import urllib3

from meshops.domain.errors import BadInput
from meshops.drivers.http_api import HttpProbeApi as HttpProbeApi
from meshops.drivers.http_api import ProbeResult as ProbeResult
from meshops.drivers.http_api import parse_address as parse_address
from meshops.drivers.http_api import parse_connect_to as parse_connect_to
from meshops.drivers.http_api import split_url as split_url

_MAX_BODY = 64 * 1024


CONNECT_TO_ENV = "MESHOPS_CONNECT_TO"


def connect_to_from_environment(environ: dict[str, str] | None = None) -> dict[tuple[str, int], tuple[str, int]]:
    """The ``MESHOPS_CONNECT_TO`` overrides; BadInput (naming the variable) when one is malformed."""
    text = (os.environ if environ is None else environ).get(CONNECT_TO_ENV, "")
    entries = [e for e in text.replace(",", " ").split() if e]
    try:
        return parse_connect_to(entries)
    except BadInput as exc:
        raise BadInput(f"${CONNECT_TO_ENV}: {exc.message.removeprefix('--connect-to ')}") from None


class HttpProber:
    """``HttpProbeApi`` over urllib3; one small connection pool per address, reused across probes."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, verify_tls: bool = True,
                 connect_to: dict[tuple[str, int], tuple[str, int]] | None = None) -> None:
        self._clock = clock
        self._verify = verify_tls
        self._overrides = connect_to_from_environment() if connect_to is None else dict(connect_to)
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self.probes = 0

    def _pool(self, scheme: str, host: str, port: int, server_name: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, host, port, server_name)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        host, port, maxsize=2, retries=False, server_hostname=server_name,
                        assert_hostname=server_name if self._verify else False,
                        cert_reqs="CERT_REQUIRED" if self._verify else "CERT_NONE")
                else:
                    pool = urllib3.HTTPConnectionPool(host, port, maxsize=2, retries=False)
                self._pools[key] = pool
            return pool

    def probe(self, url: str, *, connect_to: str | None = None, timeout: float = 5.0,
              expect_status: tuple[int, int] = (200, 399), expect_text: str | None = None) -> ProbeResult:
        scheme, host, port, path = split_url(url)
        address = (host, port) if connect_to is None else parse_address(connect_to)
        address = self._overrides.get((address[0].lower().rstrip("."), address[1]), address)
        where = f"{address[0]}:{address[1]}"
        self.probes += 1
        started = self._clock()
        default_port = 443 if scheme == "https" else 80
        headers = {"Host": host if port == default_port else f"{host}:{port}", "User-Agent": "meshops-probe/1",
                   "Connection": "keep-alive"}
        try:
            pool = self._pool(scheme, address[0], address[1], host)
            resp = pool.urlopen("GET", path, headers=headers, redirect=False, retries=False, preload_content=False,
                                timeout=urllib3.Timeout(connect=timeout, read=timeout))
            try:
                body = resp.read(_MAX_BODY) if expect_text is not None else b""
            finally:
                resp.drain_conn()
                resp.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            return ProbeResult(url=url, ok=False, status=None, latency=self._clock() - started, address=where,
                               error=f"{type(exc).__name__}: {str(reason)[:200]}")
        except OSError as exc:
            return ProbeResult(url=url, ok=False, status=None, latency=self._clock() - started, address=where,
                               error=f"{type(exc).__name__}: {exc}"[:200])
        latency = self._clock() - started
        status = int(resp.status)
        if not expect_status[0] <= status <= expect_status[1]:
            return ProbeResult(url=url, ok=False, status=status, latency=latency, address=where,
                               error=f"HTTP {status} (expected {expect_status[0]}-{expect_status[1]})")
        if expect_text is not None and expect_text.encode() not in body:
            return ProbeResult(url=url, ok=False, status=status, latency=latency, address=where,
                               error=f"body lacks {expect_text!r}")
        return ProbeResult(url=url, ok=True, status=status, latency=latency, address=where)

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
