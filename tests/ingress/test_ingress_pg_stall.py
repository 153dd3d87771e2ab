"""The ingress on the PostgreSQL-table log while the log cannot write: over real HTTP, with a real lock held
on the log's table by a second session."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import asyncpg
import httpx
import orjson

from processor import constants as c
from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.eventlog.postgres.writer import WriterLimits
from processor.ingress.app import build_app
from processor.ingress.signature import sign
from processor.runtime.serving import serving
from processor.settings import Secret, Settings

SECRET = "whsec_stall_0123456789abcdef"
WEBHOOK = "/webhooks/stripe"


def thin_event(sandbox: str) -> bytes:
    return orjson.dumps({
        "id": f"evt_{uuid.uuid4().hex[:16]}", "object": "v2.core.event", "type": "v2.core.claimable_sandbox.claimed",
        "created": "2026-05-01T12:00:00.000Z", "livemode": False, "context": "acct_platform",
        "related_object": {"id": sandbox, "type": "v2.core.claimable_sandbox", "url": f"/v2/x/{sandbox}"},
    })


async def test_stalled_log_turns_readyz_red_and_answers_503_then_recovers_losing_no_200(
        pg_settings: Settings, database: Database, pg_dsn: str) -> None:
    """While a lock blocks the log: deliveries get 503 with Retry-After (the one over the writer's bound at
    once) and /readyz is 503; after the lock goes /readyz is 200, Stripe's redeliveries get 200, and every
    delivery answered 200 is in the log."""
    settings = dataclasses.replace(pg_settings, stripe_webhook_secrets=(Secret(SECRET),), publish_timeout_s=2.0)
    topic = settings.topic(c.TOPIC_EVENTS)
    # a bound of one body: the second delivery during the stall is refused without waiting
    limits = WriterLimits(max_queued_bytes=1, write_timeout_s=300, stalled_after_s=0.5)
    log = PostgresEventLog(database.pool, partitions=2, limits=limits)
    acknowledged: list[str] = []
    async with log, serving(build_app(settings, log)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await log.ensure_topics([topic])

        async def deliver(body: bytes) -> httpx.Response:
            headers = {"Stripe-Signature": sign(body, SECRET, int(time.time())), "Content-Type": "application/json"}
            response = await client.post(WEBHOOK, content=body, headers=headers)
            if response.status_code == 200:
                acknowledged.append(orjson.loads(body)["id"])
            return response

        assert (await deliver(thin_event("csb_before"))).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        locker = await asyncpg.connect(pg_dsn)
        try:
            await locker.execute("BEGIN; LOCK TABLE log_records IN SHARE MODE")
            bodies = [thin_event("csb_1"), thin_event("csb_2")]
            timed_out = await deliver(bodies[0])  # waits the publish timeout, its write stays blocked
            assert timed_out.status_code == 503 and timed_out.json()["error"] == "publish_timeout"
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).status_code != 503:
                assert time.monotonic() < deadline, "/readyz stayed green while the log could not write"
                await asyncio.sleep(0.05)
            started = time.monotonic()
            refused = await deliver(bodies[1])
            assert refused.status_code == 503 and refused.json()["error"] == "log_unavailable"
            assert time.monotonic() - started < 1.5, "a delivery over the bound waited for the stalled log"
            assert refused.headers["Retry-After"] == str(c.RETRY_AFTER_SECONDS)
        finally:
            await locker.execute("ROLLBACK")
            await locker.close()

        deadline = time.monotonic() + 30
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "/readyz stayed red after the log could write again"
            await asyncio.sleep(0.05)
        assert [(await deliver(body)).status_code for body in bodies] == [200, 200]  # Stripe's retries

        stored = []
        for tp, end in (await log.end_offsets(topic)).items():
            stored += [r.header(c.H_EVENT_ID) for r in await log.read(tp, 0, end)]
    assert len(acknowledged) == 3
    assert set(acknowledged) <= set(stored)
