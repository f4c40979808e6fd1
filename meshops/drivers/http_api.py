"""What steps may ask of an HTTP prober: the ``HttpProbeApi`` protocol, its result, and the
parsing of the URLs and ``--connect-to`` addresses it is given. ``HttpProber`` (http_probe.py)
implements it. Steps import this module only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from meshops.domain.errors import BadInput


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    url: str
    ok: bool
    status: int | None
    latency: float
    address: str  # host:port actually connected to
    error: str = ""


class HttpProbeApi(Protocol):
    def probe(self, url: str, *, connect_to: str | None = None, timeout: float = 5.0,
              expect_status: tuple[int, int] = (200, 399), expect_text: str | None = None) -> ProbeResult: ...


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an http(s) URL; BadInput otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"not an http(s) URL: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadInput(f"bad port in {url!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"not a host:port address: {text!r}")
    return host, int(port)


def parse_connect_to(entries: list[str]) -> dict[tuple[str, int], tuple[str, int]]:
    """curl-style ``HOST:PORT:CONNECT_HOST:CONNECT_PORT`` entries as a mapping."""
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for entry in entries:
        fields = entry.strip().split(":")
        if len(fields) != 4 or not all(fields) or not fields[1].isdigit() or not fields[3].isdigit():
            raise BadInput(f"--connect-to {entry!r}: expected HOST:PORT:CONNECT_HOST:CONNECT_PORT")
        out[(fields[0].lower().rstrip("."), int(fields[1]))] = (fields[2], int(fields[3]))
    return out
