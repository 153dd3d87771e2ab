"""`processor console`: the console alone, for the distributed deployment (ingress and consumers run elsewhere).

It opens the database, the event log and (with STRIPE_API_KEY) the Stripe client as the operator commands do,
and serves /console/ with the same HTTP limits as every server of ours. Run as many as you like behind a load
balancer: sessions are signed with PROCESSOR_SIGNING_KEY, so any replica reads any session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from processor.api.edge import EdgeGuard
from processor.console.app import build_console_app, console_routes
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.operations.session import ops_session
from processor.runtime.serving import http_limits, server_config
from processor.settings import Settings
from processor.stripe_api.client import StripeApi


def build_standalone_app(settings: Settings, event_log: EventLog, db: Database, stripe: StripeApi | None) -> Starlette:
    """/console/ plus `/` (sent to the console) and `/healthz`."""

    async def root(request: Request) -> Response:
        return RedirectResponse("/console/", 307)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    console = build_console_app(settings, event_log, db, stripe)
    routes = [Route("/", root, methods=["GET"]), Route("/healthz", healthz, methods=["GET"]),
              *console_routes(console)]
    app = Starlette(routes=routes, middleware=[Middleware(EdgeGuard)])
    app.state.operator_jobs = console.state.console.jobs
    return app


async def serve_console(settings: Settings, stop: asyncio.Event,
                        on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the console on settings.host:port until `stop` is set."""
    async with ops_session(settings, stripe=settings.stripe_api_key is not None) as ops:
        app = build_standalone_app(settings, ops.log, ops.db, ops.stripe)
        server = uvicorn.Server(server_config(app, host=settings.host, port=settings.port,
                                              limits=http_limits(settings), log_level="warning", lifespan="off"))
        web = asyncio.create_task(server.serve(), name="console http")
        # uvicorn sets a flag, not an event, once it listens
        while not server.started and not web.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if server.started and on_ready is not None:
            on_ready(f"http://{settings.host}:{settings.port}/console/")
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, web], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        server.should_exit = True
        await web
        await app.state.operator_jobs.stop()  # running jobs end as interrupted; a replay resumes when run again
