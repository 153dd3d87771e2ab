"""A reconcile pass repairs only what webhooks lost, not what webhooks are still about to do: events on their way
from Stripe, or waiting in the consumer's lag (real emulator, PostgreSQL log and database)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from processor import constants as c
from processor.db.pool import Database
from processor.dev.emulator.config import Knobs
from processor.dev.emulator.runner import RunningEmulator
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State
from processor.operations.reconcile import reconcile
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.lifecycle_harness import publish_made
from tests.support.ops_harness import create_sandboxes, emulator_stack, expected_states, wait_for, with_db, worker

#: the webhooks are not delivered: the test puts Stripe's events into the log itself, when it wants
NOT_DELIVERED = Knobs(rate_limit_rps=0, delivery_enabled=False)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def fetches(emu: RunningEmulator) -> int:
    async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as client:
        [key] = (await client.get("/_emulator/requests")).json()["keys"]
    return int(key["by_operation"].get("retrieve_sandbox", 0))


async def test_sandboxes_whose_events_are_younger_than_the_age_are_not_discovered_as_lost(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """Sandboxes Stripe made a moment ago, whose webhooks have not arrived yet, are not registered as "lost
    webhooks": Stripe may still deliver them. Past the pass's age they are."""
    async with emulator_stack(pg_settings, pg_log, NOT_DELIVERED) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db:
            ids = await create_sandboxes(api, 2, "fresh")
            stack.emu.state.sandboxes.claim(ids[0], "new")
            report = await reconcile(settings, db, api)  # the default age: an hour
            assert (report.discovered, report.repairs) == ([], 0)
            assert await query(pg_dsn, "SELECT id FROM sandboxes") == []

            late = await reconcile(settings, db, api, age=timedelta(0))
            assert sorted(late.discovered) == sorted(ids)
            assert late.repairs == 2


async def test_a_pass_does_not_repair_a_sandbox_whose_event_waits_in_the_consumers_lag(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """A sandbox that has not moved for hours is claimed; its `claimed` event is in the log but the consumer has
    not read it yet when the pass fetches the sandbox. The pass waits for the consumer instead of repairing:
    once the consumer applied the event, the sandbox is in sync, and no lost webhook is recorded."""
    async with emulator_stack(pg_settings, pg_log, NOT_DELIVERED) as stack:
        settings = with_db(stack.settings, pg_dsn)
        topic = settings.topic(c.TOPIC_EVENTS)
        await pg_log.ensure_topics([settings.topic(t) for t in c.ALL_TOPICS])
        async with StripeApi(settings) as api, Database(settings) as db:
            [sandbox_id] = await create_sandboxes(api, 1, "lagging")
            _, seen = await publish_made(stack.emu, pg_log, topic)
            async with worker(settings, pg_log, db):  # `created`: registered as unclaimed
                await wait_for(lambda: registered(pg_dsn), 30, "the sandbox registered")
            await query(pg_dsn, "UPDATE sandboxes SET updated_at = now() - interval '2 hours'")

            stack.emu.state.sandboxes.claim(sandbox_id, "new")
            await publish_made(stack.emu, pg_log, topic, after=seen)  # in the log, nobody consuming
            task = asyncio.create_task(reconcile(settings, db, api, discover=False, event_log=pg_log))
            try:
                await wait_for(lambda: fetched_once(stack.emu), 30, "the pass to fetch the sandbox")
                assert not task.done()  # it waits for the consumer
                assert [r["state"] for r in await query(pg_dsn, "SELECT state FROM sandboxes")] == ["unclaimed"]
                async with worker(settings, pg_log, db):
                    report = await asyncio.wait_for(task, 60)
            finally:
                task.cancel()
        assert (report.checked, report.repairs, dict(report.repaired)) == (1, 0, {})
        assert await query(pg_dsn, "SELECT 1 FROM sandbox_history WHERE kind = 'repair'") == []
        [row] = await query(pg_dsn, "SELECT state FROM sandboxes WHERE id = $1", sandbox_id)
        assert State(row["state"]) == expected_states(stack.emu, [sandbox_id])[sandbox_id] != State.UNCLAIMED


async def registered(dsn: str) -> bool:
    return bool(await query(dsn, "SELECT 1 FROM sandboxes"))


async def fetched_once(emu: RunningEmulator) -> bool:
    return await fetches(emu) >= 1
