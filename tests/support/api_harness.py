"""The sandbox API served by uvicorn on a free port, in front of real PostgreSQL and the real emulator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime

import httpx
from starlette.applications import Starlette

from processor import constants as c
from processor.api import build_api_routes
from processor.consumer.applier import Applier, Observation
from processor.consumer.inbound import Action, Inbound
from processor.db.pool import Database
from processor.dev.emulator.config import EmulatorConfig, Knobs
from processor.dev.emulator.runner import RunningEmulator, running_emulator
from processor.eventlog.base import Record
from processor.lifecycle import observed_state
from processor.runtime.serving import free_port, serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from processor.tokenbucket import TokenBuckets

TOKEN = "tok_api_test_4f1c0b7e9a2d4c3b8e5f6a7b"
OTHER_TOKEN = "tok_api_test_other_77aa55cc33ee11ff"
SIGNING_KEY = "signing-key-for-tests-0123456789"


@dataclass
class ApiStack:
    """Where the API listens, a client carrying a valid token, and what is behind it."""

    url: str
    client: httpx.AsyncClient
    emu: RunningEmulator
    settings: Settings
    db: Database
    stripe: StripeApi

    async def create(self, key: str, **body: object) -> httpx.Response:
        """POST /v1/sandboxes with an Idempotency-Key and a valid default body."""
        payload = {"email": "dev@platform.test", "country": "us", **body}
        return await self.client.post("/v1/sandboxes", json=payload, headers={"Idempotency-Key": key})

    async def observe(self, sandbox_id: str) -> None:
        """Apply the sandbox's newest Stripe event as the lifecycle consumer would (fetch, then apply)."""
        page = await self.stripe.list_events({"object_id": sandbox_id, "limit": 1})
        event = page["data"][0]
        created = datetime.fromisoformat(event["created"])
        record = Record("test", 0, 0, None, b"", (), 0)
        inbound = Inbound(record, event["id"], event["type"], Action.OBSERVE, sandbox_id, event["context"], created)
        fetched = await self.stripe.retrieve_sandbox(sandbox_id)
        applier = Applier(self.db.pool, self.settings.topic(c.TOPIC_TRANSITIONS), self.settings.topic(c.TOPIC_STATE))
        await applier.apply([Observation(sandbox_id, [inbound], fetched, observed_state(fetched))], [], [])


@contextlib.asynccontextmanager
async def api_stack(
    base: Settings,
    db: Database,
    *,
    knobs: Knobs | None = None,
    stripe_key: str | None = None,
    refresh_limit: TokenBuckets | None = None,
) -> AsyncIterator[ApiStack]:
    """Emulator (rate limit off) + the API's routes on uvicorn; Stripe retries kept short for the failure tests."""
    async with running_emulator(EmulatorConfig(knobs=knobs or Knobs(rate_limit_rps=0), seed=3)) as emu:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings = replace(
            base,
            stripe_api_key=Secret(stripe_key or emu.api_key),
            stripe_api_base=emu.base_url,
            stripe_max_rps=1000.0,
            api_tokens=(Secret(TOKEN), Secret(OTHER_TOKEN)),
            signing_key=Secret(SIGNING_KEY),
            public_url=url,
        )
        async with StripeApi(settings, max_attempts=2, base_delay_s=0.01, max_delay_s=0.02) as stripe:
            app = Starlette(routes=build_api_routes(settings, db, stripe, refresh_limit=refresh_limit))
            async with serving(app, port=port, lifespan="off"):
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
                    yield ApiStack(url, client, emu, settings, db, stripe)
