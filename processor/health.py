"""A tiny HTTP server for a worker's liveness and metrics: GET /healthz, /readyz and /metrics.

Plain asyncio streams rather than a web framework: three fixed answers do not need routing or middleware,
and the worker stays one event loop with no extra server to shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """Answers /healthz from `alive()`, /readyz from `ready()` and /metrics from `metrics()`."""

    def __init__(self, alive: Callable[[], bool], ready: Callable[[], bool], metrics: Callable[[], bytes]) -> None:
        self.alive = alive
        self.ready = ready
        self.metrics = metrics
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            method, _, rest = request_line.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                status, body, ctype = 405, b'{"error":"method_not_allowed"}', "application/json"
            elif path == "/healthz":
                ok = self.alive()
                status, body, ctype = (
                    (200 if ok else 503),
                    b'{"status":"%s"}' % (b"ok" if ok else b"stalled"),
                    "application/json",
                )
            elif path == "/readyz":
                ok = self.ready()
                status, body, ctype = (
                    (200 if ok else 503),
                    b'{"status":"%s"}' % (b"ready" if ok else b"unavailable"),
                    "application/json",
                )
            elif path == "/metrics":
                status, body, ctype = 200, self.metrics(), "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, body, ctype = 404, b'{"error":"not_found"}', "application/json"
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[HealthServer]:
        """Listen on host:port (0 = a free port, then `self.port`) until the block ends."""
        server = await asyncio.start_server(self._handle, host, port)
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()
