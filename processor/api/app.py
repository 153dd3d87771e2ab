"""Routes of the sandbox API and the refresh URL, to mount next to the ingress's (or run alone in tests).

    routes = build_api_routes(settings, db, stripe_api)   # db started, stripe_api open; both owned by the caller

`/v1/...` needs a bearer token; `/sandboxes/{id}/onboarding` is public and protected by its signature. Every
handler answers with a status and a small body: Stripe failures become 502/503, database failures 503, and
anything unexpected a JSON 500 without a traceback (the traceback goes to the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processor import constants as c
from processor.api.auth import BearerAuth, Principal, unauthorized
from processor.api.ratelimit import KeyedRateLimit
from processor.api.refresh import RefreshEndpoint
from processor.api.responses import database_failure, error, stripe_failure
from processor.api.sandboxes import SandboxEndpoints
from processor.api.store import ApiStore
from processor.consumer.applier import Applier
from processor.db.pool import DATABASE_ERRORS, Database
from processor.errors import ConfigError, DatabaseUnavailable, StripeError
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger("processor.api")

Handler = Callable[[Request, Principal], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
_DATABASE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, DatabaseUnavailable)


def _guarded(handler: Endpoint) -> Endpoint:
    """Map failures to answers: nothing leaves a handler as an exception (so no 500 page, no traceback)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except StripeError as exc:
            return stripe_failure(exc)
        except _DATABASE_ERRORS as exc:
            # a value the database refused (asyncpg's client-side DataError is a ValueError, the server's a
            # DataError): the caller's to fix, not an outage
            if isinstance(exc, asyncpg.DataError | ValueError):
                return error(400, "invalid_value", "A value in the request is not valid.")
            return database_failure(exc)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return error(500, "internal_error", "Unexpected error; it was logged.")

    return run


def _authenticated(auth: BearerAuth, handler: Handler, after: Callable[[], None] | None = None) -> Endpoint:
    async def run(request: Request) -> Response:
        principal = auth.authenticate(request)
        if principal is None:
            return unauthorized()
        try:
            return await handler(request, principal)
        finally:
            if after is not None:
                after()

    return _guarded(run)


def build_api_routes(
    settings: Settings,
    db: Database,
    stripe_api: StripeApi,
    *,
    signing_key: Secret | None = None,
    outbox_signal: asyncio.Event | None = None,
    refresh_limit: KeyedRateLimit | None = None,
) -> list[Route]:
    """The API's routes; `signing_key` overrides `settings.signing_key`, `outbox_signal` wakes the relay."""
    key = signing_key or settings.signing_key
    if key is None:
        raise ConfigError("PROCESSOR_SIGNING_KEY", "the sandbox API needs a key to sign refresh URLs")
    auth = BearerAuth(settings.api_tokens)
    if not auth.configured:
        log.warning("PROCESSOR_API_TOKENS is empty: every /v1/sandboxes request will be refused (401)")
    store = ApiStore(db.pool)
    applier = Applier(db.pool, settings.topic(c.TOPIC_TRANSITIONS), settings.topic(c.TOPIC_STATE))
    sandboxes = SandboxEndpoints(store, applier, stripe_api, key, settings.public_url)
    refresh = RefreshEndpoint(store, stripe_api, key, settings.public_url, refresh_limit)
    wake = outbox_signal.set if outbox_signal is not None else None
    return [
        Route("/v1/sandboxes", _authenticated(auth, sandboxes.create, wake), methods=["POST"]),
        Route("/v1/sandboxes", _authenticated(auth, sandboxes.list), methods=["GET"]),
        Route("/v1/sandboxes/{id}", _authenticated(auth, sandboxes.retrieve), methods=["GET"]),
        Route("/sandboxes/{id}/onboarding", _guarded(refresh), methods=["GET"]),
    ]
