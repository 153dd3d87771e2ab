"""Signed events the parser cannot read are dead-lettered once and their partitions go on."""

from __future__ import annotations

import json
from typing import Any

import httpx
from test_consumer_end_to_end import worker

from processor import constants as c
from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.ingress.signature import sign
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.lifecycle_harness import (
    WEBHOOK_SECRET,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    read_topic,
    running_ingress,
    settled,
    wait_for,
)


def poison_bodies(sandbox_id: str, account: str) -> dict[str, dict[str, Any]]:
    """Verified events whose `created` no datetime can hold, keyed like the sandbox's own events."""
    thin = {
        "id": "evt_test_year_one_plus_14h",
        "object": "v2.core.event",
        "type": "v2.core.claimable_sandbox.updated",
        "livemode": False,
        "context": None,
        "created": "0001-01-01T00:00:00+14:00",
        "related_object": {"id": sandbox_id, "type": "v2.core.claimable_sandbox", "url": "/v2/x"},
    }
    v1 = {"id": "evt_test_created_10e18", "object": "event", "type": "account.application.deauthorized",
          "account": account, "created": 10**18, "data": {"object": {"id": "ca_1", "object": "application"}}}
    return {body["id"]: body for body in (thin, v1)}


async def test_events_with_created_out_of_range_are_dead_lettered_once(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """Signed events with `created` out of range (year 1 at +14:00, 10**18 s) each reach the DLQ exactly once as
    malformed_event, and the events behind them in the same partitions are applied and committed."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = stack.settings
        async with StripeApi(settings) as api:
            ids = await create_sandboxes(api, 8, "poison")
        bodies = poison_bodies(ids[0], "acct_poison")
        async with running_ingress(settings, pg_log) as url, httpx.AsyncClient(timeout=30) as client:
            for body in bodies.values():
                raw = json.dumps(body).encode()
                answer = await client.post(url, content=raw, headers={
                    "Stripe-Signature": sign(raw, WEBHOOK_SECRET), "Content-Type": "application/json"})
                assert answer.status_code == 200, answer.text
        # the sandbox's own events come after the poison in its partition
        drive(stack.emu, ids)
        await stack.emu.wait_for_deliveries()
        expected = expected_states(stack.emu, ids)
        events = settings.topic(c.TOPIC_EVENTS)
        ends = await pg_log.end_offsets(events)
        reader = pg_log.consumer(settings.topic(c.GROUP_LIFECYCLE), [events])  # not started: reads commits only

        async def all_committed() -> bool:
            return [await reader.committed(tp) for tp in ends] == [end or None for end in ends.values()]

        async with Database(settings) as db, worker(settings, pg_log, db):
            await wait_for(lambda: settled(pg_dsn, expected), 60, "every sandbox in Stripe's state")
            await wait_for(all_committed, 60, "every partition committed to its end")
        dead = await read_topic(pg_log, settings.topic(c.TOPIC_DLQ))
    assert sorted(r.header(c.H_EVENT_ID) or "" for r in dead) == sorted(bodies)
    assert {r.header(c.H_ERROR_CLASS) for r in dead} == {"malformed_event"}
    assert all("created" in (r.header(c.H_ERROR_MESSAGE) or "") for r in dead)
