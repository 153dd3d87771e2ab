"""The emulator as one Starlette application: the Stripe API, the control endpoints and their lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from processor.dev.emulator import api, control, errors, guard, ids
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
        middleware=guard.middleware(state.config),
        lifespan=lifespan,
    )
    app.state.emulator = state
    return app
