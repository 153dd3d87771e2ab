"""`processor run`'s HTTP app refuses hostile ids, cursors and numbers with 400, never a 500 or a 503; under /v1
every refusal (unknown path, wrong method, a body over the limit) is a problem."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

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
    """NUL in ids and cursors, a 20-digit partition, a 5,000-digit limit: each a 400 (a problem under /v1)."""
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
                replies = {path: await client.get(path) for path in HOSTILE_GETS}
                for path, body in HOSTILE_POSTS:
                    replies[f"POST {path} {body}"] = await client.post(path, json=body)
                unknown = await client.get("/v1/nowhere")
                wrong_method = await client.delete("/v1/ops/status")
                chunked = await client.post("/v1/ops/replay", content=_chunks(settings.max_body_bytes + 1))
    assert {k: r.status_code for k, r in replies.items() if r.status_code != 400} == {}
    # the /v1 ones are problems, whoever answers: a handler, EdgeGuard or the router
    assert {k for k, r in replies.items() if k.startswith(("/v1/", "POST /v1/"))
            and r.headers["content-type"] != "application/problem+json"} == set()
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")
    # a chunked body (no Content-Length) is counted as it arrives and refused past the limit
    assert (chunked.status_code, chunked.json()["code"]) == (413, "body_too_large")


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = b" " * min(64 * 1024, total - sent)
        sent += len(piece)
        yield piece
