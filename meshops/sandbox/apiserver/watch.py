"""Watch streams: initial state or history, live events, bookmarks, timeouts and cuts.

A watch is a chunked HTTP response of newline-delimited ``{"type", "object"}`` events. Objects
that start or stop matching the selector arrive as ADDED or DELETED, as from kube's watch cache.
A resourceVersion older than the kept history gets a 410 Expired ERROR event, which the clients
answer by relisting.
"""

from __future__ import annotations

import random
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

from . import errors
from .errors import ApiError
from .jsonutil import dumps
from .kinds import ResourceType
from .routing import RequestInfo
from .selectors import make_matcher
from .served import ActiveStream, Responder, ServedCluster, WatchCut, WatchFilter
from .store import StoredVersion, StoreEvent, Watcher
from .wire import TABLE_CONTENT_TYPE, object_json

# ActiveStream, WatchCut and WatchFilter live in served.py (the cluster holds them); re-exported.
__all__ = ["ActiveStream", "WatchCut", "WatchFilter", "WatchRequest", "stream_watch"]

_IDLE_TICK = 0.5  # how often an idle stream checks for cuts, a closed client and bookmarks


@dataclass(frozen=True, kw_only=True)
class WatchRequest:
    rt: ResourceType
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    resource_version: str | None
    timeout_seconds: int | None
    bookmarks: bool
    send_initial_events: bool
    table: bool


def _client_gone(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def stream_watch(http: Responder, cluster: ServedCluster, info: RequestInfo, request: WatchRequest) -> int:
    rt = request.rt
    matcher = make_matcher(request.label_selector, request.field_selector)
    namespace = request.namespace
    try:
        since = int(request.resource_version) if request.resource_version not in (None, "") else None
    except ValueError:
        raise errors.bad_request(f"invalid resourceVersion {request.resource_version!r}") from None
    cut: WatchCut | None = None
    for watch_filter in list(cluster.watch_filters):
        cut = watch_filter(info) or cut
    timeout = request.timeout_seconds if request.timeout_seconds and request.timeout_seconds > 0 else 1800 + random.randint(0, 1800)
    table = cluster.tables if request.table else None

    def encode(event_type: str, version: StoredVersion) -> bytes:
        if table is not None:
            body = table.table(rt, [version], None, None, watch_row=True)
        else:
            body = object_json(rt, version)
        return b'{"type":"' + event_type.encode() + b'","object":' + body + b"}\n"

    def bookmark(annotations: dict[str, str] | None = None) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(cluster.store.resource_version)}
        if annotations:
            meta["annotations"] = annotations
        return dumps({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}}) + b"\n"

    def relevant(event: StoreEvent) -> str | None:
        """The event type this watcher should see, or None to skip it."""
        if namespace is not None and event.namespace != namespace:
            return None
        if matcher is None:
            return event.type
        now_matches = event.type != "DELETED" and matcher(event.obj)
        if event.type == "ADDED":
            return "ADDED" if now_matches else None
        was_matching = event.old is not None and matcher(event.old)
        if event.type == "DELETED":
            return "DELETED" if was_matching else None
        if now_matches and was_matching:
            return "MODIFIED"
        if now_matches:
            return "ADDED"
        return "DELETED" if was_matching else None

    stream = ActiveStream(info)
    watcher: Watcher | None = None
    backlog: list[StoreEvent] = []
    expired: ApiError | None = None
    try:
        watcher, backlog = cluster.store.watch(rt.group_resource, since)
    except ApiError as e:
        expired = e
    http._send_headers_for_stream(TABLE_CONTENT_TYPE if table is not None else "application/json")
    write = http._write_chunk
    sent = 0
    deadline = time.monotonic() + timeout
    bookmark_every = cluster.bookmark_interval
    last_write = time.monotonic()
    cluster.streams.add(stream)
    try:
        if expired is not None:
            write(dumps({"type": "ERROR", "object": expired.status()}) + b"\n")
            http._end_stream()
            return 200
        assert watcher is not None
        pending = [e for e in backlog]
        initial_done = since not in (None, 0) or not request.send_initial_events
        while True:
            for event in pending:
                event_type = relevant(event)
                if event_type is None:
                    continue
                write(encode(event_type, event.version))
                last_write = time.monotonic()
                sent += 1
                if cut is not None and cut.after_events and sent >= cut.after_events:
                    stream.cut(abrupt=cut.abrupt)
                    break
            pending = []
            if not initial_done:
                write(bookmark({"k8s.io/initial-events-end": "true"}))
                initial_done = True
            if stream.cut_requested.is_set():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            next_event = watcher.next(min(remaining, _IDLE_TICK))
            if next_event is not None:
                pending.append(next_event)
                continue
            if watcher.overflowed:
                break  # too far behind: end the stream; the client resumes from its last RV
            if stream.cut_requested.is_set() or _client_gone(http.connection):
                break
            if request.bookmarks and time.monotonic() - last_write >= bookmark_every:
                with cluster.store.lock:
                    if watcher.queue.empty():  # everything up to the current RV has been sent
                        write(bookmark())
                        last_write = time.monotonic()
        if stream.abrupt:
            http._abort_stream()
        else:
            http._end_stream()
        return 200
    except (BrokenPipeError, ConnectionResetError, OSError):
        http.close_connection = True
        return 200
    finally:
        cluster.streams.discard(stream)
        if watcher is not None:
            watcher.stop()
