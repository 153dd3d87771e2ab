"""The HTTP server's limits on what one client may make it hold: head size, time to send a head, connections.

uvicorn with httptools is the fastest HTTP/1.1 server available to us, but it bounds none of this: a request
head is buffered whatever its size (httptools and uvicorn append each piece to what they hold, so a 256 MiB
header costs minutes of CPU), a connection that never sends a head is kept forever, and there is no cap on
connections. uvicorn's h11 option bounds the head (`h11_max_incomplete_event_size`) but answers 400 rather
than 431/414, still has no head timeout, and costs a third of the throughput. So we keep httptools and add
the limits in a subclass of uvicorn's protocol, where the bytes arrive:

- the head (request line and headers) is counted as it arrives: over `max_head_bytes` -> 414 while the
  request line is incomplete, else 431; more than `max_headers` headers -> 431;
- a head must be complete within `head_timeout_s` of the connection opening (or of its first byte for a
  later request on a kept-alive connection), a body within `body_timeout_s` of its head -> 408 and close;
- at most `max_connections` connections: when full, the connection that has waited longest for a head is
  closed to make room (idle connections cannot lock clients out), else the newcomer is refused with 503;
- header lines after a chunked body (trailers) are never added to the request's headers;
- `Upgrade` is ignored (no WebSockets are served): the request is answered and the connection closed;
- paths are routed as sent: `/%6Detrics` is not `/metrics`, so path rules of a proxy in front hold here too
  (uvicorn decodes percent-escapes into `scope["path"]`; `raw_path` keeps what was sent).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: after a refusal, what the client still sends is read and dropped for this long before closing, so that the
#: answer is not lost to the reset a close with unread data causes (a "lingering close", as nginx does)
LINGER_S = 2.0
#: how often the connections' deadlines are checked: timeouts fire up to this much late
SWEEP_INTERVAL_S = 1.0
#: descriptors kept free for everything that is not a client connection (database, broker, files, logs)
FD_RESERVE = 128

_HEAD_END = b"\r\n\r\n"
_REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one server accepts from its clients; the defaults leave Stripe's deliveries far inside."""

    max_head_bytes: int = 16 * 1024
    max_headers: int = 64
    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 5.0
    max_connections: int = 1000


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered so that connections never take the descriptors the rest of the process needs.

    Raises this process's soft descriptor limit to its hard limit first (the usual 1,024 soft limit is an old
    default for select(); the event loop uses epoll).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + FD_RESERVE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    return max(1, min(wanted, soft - FD_RESERVE))


class _Refused(Exception):
    """Raised from a parser callback to answer `status` and close the connection."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of one server (see the module docstring)."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    #: connections of this server waiting for a request head, oldest first (dicts keep insertion order)
    waiting: ClassVar[dict[LimitedHttpProtocol, None]] = {}

    #: whether the sweep of this server's deadlines is scheduled (a list: mutable, one per server class)
    sweeping: ClassVar[list[bool]] = [False]

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[LimitedHttpProtocol]:
        """A protocol class for one server: its own limits and its own list of waiting connections."""
        return type("LimitedHttpProtocol", (cls,), {"limits": limits, "waiting": {}, "sweeping": [False]})

    def _sweep(self, connections: set[Any], sweeping: list[bool]) -> None:
        """Act on the deadlines that passed, once a second while the server has connections."""
        now = self.loop.time()
        for connection in list(connections):
            deadline = getattr(connection, "_deadline", None)
            if deadline is not None and deadline <= now:
                try:
                    connection._late()
                except Exception:  # one connection's failure must not end the sweep: no timeout would hold
                    log.exception("closing a connection past its deadline failed")
                    connection.transport.close()
        if connections:
            self.loop.call_later(SWEEP_INTERVAL_S, self._sweep, connections, sweeping)
        else:
            sweeping[0] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_pending = True
        self._url_done = False
        self._header_count = 0
        #: loop time by which the head (or body) must be complete; checked by the server's sweep, because a
        #: timer started and cancelled twice per request cost the ingress a noticeable share of its throughput
        self._deadline: float | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.sweeping[0]:
            self.sweeping[0] = True
            self.loop.call_later(SWEEP_INTERVAL_S, self._sweep, self.connections, self.sweeping)
        if len(self.connections) > self.limits.max_connections and not self._evict_oldest_waiting():
            self._refuse(503)
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _evict_oldest_waiting(self) -> bool:
        for other in self.waiting:
            if other.cycle is not None and not other.cycle.response_complete:
                continue  # a pipelined head is pending behind a request still being answered: not idle
            other._stop_waiting()
            other.transport.close()
            return True
        return False

    def _await_head(self) -> None:
        self._head_pending, self._head_bytes, self._url_done, self._header_count = True, 0, False, 0
        self.waiting[self] = None
        self._arm(self.limits.head_timeout_s)

    def _stop_waiting(self) -> None:
        self.waiting.pop(self, None)
        self._deadline = None

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds

    def _late(self) -> None:
        self._deadline = None
        if self._lingering or self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started and not self._head_pending:
            self.transport.close()  # an answer is on its way; nothing more can be said on this connection
        else:
            self._refuse(408)

    def _refuse(self, status: int) -> None:
        """Answer `status` with a JSON error and close, without involving the app."""
        self._stop_waiting()
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        payload = b'{"error":"%s"}' % _REASONS[status].lower().replace(b" ", b"_")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(payload), payload)
        )
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app's receive() sees a disconnect; its answer goes nowhere
            self.cycle.message_event.set()
        self._lingering = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        try:
            self.transport.write_eof()
        except OSError:  # the peer reset the connection before we answered: nothing to linger for
            self.transport.close()
            return
        self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self.transport.is_closing():
            return
        if self._head_pending:
            allowed = self.limits.max_head_bytes - self._head_bytes
            self._head_bytes += len(data)
            # counted before parsing: the parser copies a growing head on every piece it gets
            if self._head_bytes > self.limits.max_head_bytes and data.find(_HEAD_END, 0, allowed + 4) < 0:
                url_open = not self._url_done and data.find(b"\r\n", 0, allowed + 2) < 0
                self._refuse(414 if url_open else 431)
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__.status)
            else:
                self._bad_request()
        except httptools.HttpParserUpgrade:
            if self.cycle is not None:
                self.cycle.keep_alive = False  # answer the request as plain HTTP, then close
        except httptools.HttpParserError:
            self._bad_request()

    def _bad_request(self) -> None:
        self._stop_waiting()
        self.send_400_response("Invalid HTTP request received.")

    # parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._head_pending:  # a later request on a kept-alive connection
            self._await_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_pending:
            return  # a trailer after a chunked body: it must not change the headers the app already read
        self._url_done = True
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _Refused(431)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._url_done = True
        self.waiting.pop(self, None)
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()
        raw_path = self.scope.get("raw_path")
        if raw_path is not None and b"%" in raw_path:
            self.scope["path"] = raw_path.decode("ascii")  # the task reading the scope has not run yet

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            self.waiting[self] = None  # idle until the next request: the first to go when connections run out

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()
