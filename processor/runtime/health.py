"""A worker's liveness, readiness and metrics endpoints: GET /healthz, /readyz and /metrics.

A small Starlette app served by uvicorn (the same HTTP stack as the ingress and the API), so request parsing,
limits and timeouts are the server's, not ours.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from processor.runtime.serving import serving

#: the content type of Prometheus's text exposition format
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthServer:
    """Answers /healthz from `alive()`, /readyz from `ready()` and /metrics from `metrics()`."""

    def __init__(self, alive: Callable[[], bool], ready: Callable[[], bool], metrics: Callable[[], bytes]) -> None:
        self.alive = alive
        self.ready = ready
        self.metrics = metrics
        self.port = 0

    async def _healthz(self, request: Request) -> Response:
        ok = self.alive()
        return JSONResponse({"status": "ok" if ok else "stalled"}, status_code=200 if ok else 503)

    async def _readyz(self, request: Request) -> Response:
        ok = self.ready()
        return JSONResponse({"status": "ready" if ok else "unavailable"}, status_code=200 if ok else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics(), media_type=METRICS_CONTENT_TYPE)

    def app(self) -> Starlette:
        """The ASGI app: three GET routes; anything else is Starlette's 404/405."""
        return Starlette(
            routes=[
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ]
        )

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[HealthServer]:
        """Listen on host:port (0 = a free port, then `self.port`) until the block ends."""
        async with serving(self.app(), host=host, port=port, lifespan="off") as base_url:
            self.port = int(urlsplit(base_url).port or 0)
            yield self
