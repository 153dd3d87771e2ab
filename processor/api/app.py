"""Routes of the sandbox API and the refresh URL, to mount next to the ingress's (or run alone in tests).

    routes = build_api_routes(settings, db, stripe_api)   # db started, stripe_api open; both owned by the caller

`/v1/...` needs a bearer token (`auth.authenticated`); `/sandboxes/{id}/onboarding` is public and protected by
its signature. Every handler answers with a status and a small body: Stripe failures become 502/503, database
failures 503, and anything unexpected a 500 without a traceback (the traceback goes to the log); `/v1/...`
errors are RFC 9457 problems (`responses.problem`), the refresh URL's are HTML pages for a person.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.routing import Route

from processor import constants as c
from processor.api.auth import BearerAuth, authenticated
from processor.api.refresh import RefreshEndpoint
from processor.api.responses import guarded
from processor.api.sandboxes import SandboxEndpoints
from processor.api.store import ApiStore
from processor.consumer.applier import Applier
from processor.db.pool import Database
from processor.errors import ConfigError
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from processor.tokenbucket import TokenBuckets

log = logging.getLogger("processor.api")


def build_api_routes(
    settings: Settings,
    db: Database,
    stripe_api: StripeApi,
    *,
    signing_key: Secret | None = None,
    outbox_signal: asyncio.Event | None = None,
    refresh_limit: TokenBuckets | None = None,
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
        Route("/v1/sandboxes", authenticated(auth, sandboxes.create, wake), methods=["POST"]),
        Route("/v1/sandboxes", authenticated(auth, sandboxes.list), methods=["GET"]),
        Route("/v1/sandboxes/{id}", authenticated(auth, sandboxes.retrieve), methods=["GET"]),
        Route("/sandboxes/{id}/onboarding", guarded(refresh), methods=["GET"]),
    ]
