"""The emulator as one Starlette application: the Stripe API, the control endpoints and their lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import format_datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from processor.dev.emulator import api, control, errors, guard, ids
from processor.dev.emulator.clock import Clock
from processor.dev.emulator.config import EmulatorConfig
from processor.dev.emulator.state import EmulatorState


async def _http_error(request: Request, exc: Exception) -> Response:
    # unknown paths and methods answer in Stripe's error shape too, so SDK callers get a proper exception
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = errors.ApiError(
            404,
            "invalid_request_error",
            "not_found",
            f"Unrecognized request URL ({request.method}: {request.url.path}).",
        )
    else:
        error = errors.ApiError(
            exc.status_code, "invalid_request_error", "method_not_allowed", str(exc.detail)
        )
    return error.response(ids.request_id())


class DateFromClock:
    """Every answer's `Date` header is the emulator's clock, as Stripe's is Stripe's: the consumer compares it
    with events' `created`, which the same clock stamps, also after a test moved the clock forward. Serve the
    app without the server's own Date header (uvicorn `date_header=False`), or the answer carries two."""

    def __init__(self, app: ASGIApp, clock: Clock) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # stamped when the request comes in, before the object is read: an answer never claims to be newer
        # than what it shows
        date = format_datetime(self.clock.now(), usegmt=True).encode()

        async def send_with_date(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", date)]}
            await send(message)

        await self.app(scope, receive, send_with_date)


def build_app(config: EmulatorConfig | EmulatorState | None = None) -> Starlette:
    """The emulator app; pass an `EmulatorState` to keep a handle on it (the in-process runner does)."""
    state = config if isinstance(config, EmulatorState) else EmulatorState(config or EmulatorConfig())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(
        routes=[*api.routes(), *control.routes()],
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(DateFromClock, clock=state.clock), *guard.middleware(state.config)],
        lifespan=lifespan,
    )
    app.state.emulator = state
    return app
