"""The seams of the HTTP layer: what the request handler, the resource handlers and watch
streams need from the cluster they serve, and from the connection they answer on.

``Cluster`` (the layer above) fulfils ``ServedCluster``; ``http.ApiRequestHandler`` fulfils
``Responder``. Naming them here keeps ``http -> handlers -> watch`` a one-way chain.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .api import ResourceApi
from .audit import AuditLog
from .discovery import Discovery
from .kinds import ResourceTypes
from .openapi import OpenApi
from .routing import RequestInfo
from .store import Store
from .tables import TableConverter
from .wire import Accept

Obj = dict[str, Any]
# (status, body, headers): body is a dict (sent as JSON), bytes, str or None.
FilterResponse = tuple[int, Any, dict[str, str] | None]
RequestFilter = Callable[[RequestInfo], FilterResponse | None]


@dataclass(frozen=True, kw_only=True)
class WatchCut:
    """Returned by a watch filter: end the stream after ``after_events`` events.

    ``abrupt`` drops the connection without the final chunk (like a load balancer resetting it);
    otherwise the stream ends cleanly, as when an API server restarts its watch cache.
    """

    after_events: int = 0
    abrupt: bool = False


WatchFilter = Callable[[RequestInfo], WatchCut | None]


class ActiveStream:
    """A watch being served; ``cut()`` ends it at the next opportunity."""

    def __init__(self, info: RequestInfo) -> None:
        self.info = info
        self.cut_requested = threading.Event()
        self.abrupt = False

    def cut(self, *, abrupt: bool = False) -> None:
        self.abrupt = abrupt
        self.cut_requested.set()


class ServedCluster(Protocol):
    """The cluster as its HTTP front sees it."""

    @property
    def token(self) -> str | None: ...
    @property
    def types(self) -> ResourceTypes: ...
    @property
    def store(self) -> Store: ...
    @property
    def api(self) -> ResourceApi: ...
    @property
    def tables(self) -> TableConverter: ...
    @property
    def openapi(self) -> OpenApi: ...
    @property
    def discovery(self) -> Discovery: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def request_filters(self) -> list[RequestFilter]: ...
    @property
    def watch_filters(self) -> list[WatchFilter]: ...
    @property
    def streams(self) -> set[ActiveStream]: ...
    @property
    def bookmark_interval(self) -> float: ...

    def version_info(self) -> Obj: ...


class Responder(Protocol):
    """The connection a resource handler or a watch stream answers on (``http.ApiRequestHandler``)."""

    connection: socket.socket
    close_connection: bool

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> int: ...

    def _send_json(self, code: int, value: Any, accept: Accept | None = None) -> int: ...

    def _send_headers_for_stream(self, content_type: str) -> None: ...

    def _write_chunk(self, data: bytes) -> None: ...

    def _end_stream(self) -> None: ...

    def _abort_stream(self) -> None: ...
