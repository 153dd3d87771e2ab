"""`processor run`'s HTTP app refuses hostile ids, cursors and numbers with 400, never a 500 or a 503."""

from __future__ import annotations

import dataclasses

import httpx

from processor.db.pool import Database
from processor.dev.emulator.config import EmulatorConfig
from processor.dev.emulator.runner import running_emulator
from processor.eventlog.postgres.log import PostgresEventLog
from processor.runtime.service import build_http_app
from processor.runtime.serving import serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi

TOKEN = "tok_edge_test_0123456789abcdef"

HOSTILE_GETS = [
    "/v1/sandboxes/csb_%00x",  # a NUL in an id: PostgreSQL refuses it in text
    "/v1/sandboxes?cursor=%00",
    "/v1/sandboxes?limit=" + "9" * 5000,  # beyond int()'s 4,300 digits
    "/v1/sandboxes?limit=%C2%B2",  # a digit to str.isdigit(), not to int()
    "/v1/ops/sandboxes/%00",
    "/v1/ops/sandboxes?cursor=%00",
    "/v1/ops/sandboxes?limit=" + "9" * 5000,
    "/v1/ops/dlq/99999999999999999999:1",  # a 20-digit partition
    "/v1/ops/dlq?sandbox_id=%00",
    "/sandboxes/csb_%00/onboarding?sig=abc",
]
HOSTILE_POSTS = [
    ("/v1/ops/replay", {"source": "dlq", "since": "9" * 30, "dry_run": True}),  # a time beyond time_t
    ("/v1/ops/replay", {"source": "offsets", "offsets": "99999999999999999999:0-", "dry_run": True}),
    ("/v1/ops/replay", {"source": "sandbox", "sandbox_id": "csb_\u0000", "dry_run": True}),
]


async def test_hostile_input_is_answered_400(
    pg_settings: Settings, database: Database, pg_log: PostgresEventLog
) -> None:
    """NUL in ids and cursors, a 20-digit partition, a 5,000-digit limit: each a 400."""
    async with running_emulator(EmulatorConfig()) as emu:
        settings = dataclasses.replace(
            pg_settings, stripe_api_key=Secret(emu.api_key), stripe_api_base=emu.base_url,
            api_tokens=(Secret(TOKEN),), signing_key=Secret("edge-signing-key-0123456789"),
            stripe_webhook_secrets=(Secret("whsec_edge_0123456789"),),
        )
        await pg_log.ensure_topics([settings.topic(name) for name in ("stripe.events", "stripe.events.dlq")])
        async with StripeApi(settings) as stripe:
            app = build_http_app(settings, pg_log, database, stripe)
            async with serving(app, lifespan="off") as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            ) as client:
                answers = {path: (await client.get(path)).status_code for path in HOSTILE_GETS}
                for path, body in HOSTILE_POSTS:
                    answers[f"POST {path} {body}"] = (await client.post(path, json=body)).status_code
    assert {k: v for k, v in answers.items() if v != 400} == {}
