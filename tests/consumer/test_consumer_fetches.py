"""The consumer fetches a sandbox from Stripe only when the event and the state we hold cannot tell its state
(real emulator over sockets, counting its requests; real PostgreSQL log and database)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import httpx
import orjson

from processor import constants as c
from processor.consumer.applier import Applier
from processor.consumer.batch import BatchPreparer
from processor.consumer.loop import ConsumerOptions, run_consumer
from processor.db.pool import Database
from processor.dev.emulator.config import Knobs
from processor.dev.emulator.runner import RunningEmulator
from processor.eventlog.base import Record
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State
from processor.lifecycle.without_fetch import Seen
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.consumer.test_consumer_end_to_end import worker
from tests.support.lifecycle_harness import (
    create_sandboxes,
    db_states,
    emulator_stack,
    expected_states,
    publish_made,
    settled,
    wait_for,
)


async def fetches(emu: RunningEmulator) -> int:
    """GETs of a claimable sandbox the emulator answered so far."""
    async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as client:
        [key] = (await client.get("/_emulator/requests")).json()["keys"]
    return int(key["by_operation"].get("retrieve_sandbox", 0))


async def test_real_time_events_are_fetched_only_when_stripe_must_tell(
    pg_settings: Settings, pg_log: PostgresEventLog
) -> None:
    """Events arriving one at a time: `created` and `expired` cost no fetch, `claimed` and `updated` one each,
    and every sandbox still ends in Stripe's state."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        emu, sandboxes = stack.emu, stack.emu.state.sandboxes
        async with StripeApi(stack.settings) as api:
            expires, goes_live, stays = await create_sandboxes(api, 3, "fetches")
        ids = [expires, goes_live, stays]
        dsn = pg_settings.database_url.reveal() if pg_settings.database_url else ""

        async def step(action: object) -> None:
            await emu.wait_for_deliveries(within_s=30)
            await wait_for(lambda: settled(dsn, expected_states(emu, ids)), 30, "the consumer to catch up")

        async with Database(stack.settings) as db, worker(stack.settings, pg_log, db):
            await step(None)  # three `created`: registered from the events alone
            assert await fetches(emu) == 0
            await step(sandboxes.expire(expires))  # `expiring` is a notice, `expired` is final
            assert await fetches(emu) == 0
            await step(sandboxes.claim(goes_live, "existing"))  # pending_install, or onboarding? Stripe knows
            assert await fetches(emu) == 1
            await step(sandboxes.install_app(goes_live, True))
            assert await fetches(emu) == 2
    assert expected_states(emu, ids) == {expires: State.EXPIRED, goes_live: State.LIVE, stays: State.UNCLAIMED}


async def test_a_backlog_fetches_a_sandbox_once_although_its_events_straddle_batches(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """A sandbox's events, already in the log when the consumer reads them one batch at a time: the fetch of
    the first event that needs Stripe already shows the later ones (created before it), so they cost no fetch
    of their own, whether the batch that fetched has committed or is still being applied."""
    knobs = Knobs(rate_limit_rps=0, delivery_enabled=False)
    async with emulator_stack(pg_settings, pg_log, knobs) as stack:
        emu, sandboxes = stack.emu, stack.emu.state.sandboxes
        async with StripeApi(stack.settings) as api:
            [sandbox_id] = await create_sandboxes(api, 1, "straddle")
        sandboxes.claim(sandbox_id, "new")  # claimed: only Stripe knows what comes next
        sandboxes.submit_application(sandbox_id)  # updated
        sandboxes.install_app(sandbox_id, True)  # updated (and live)
        await pg_log.ensure_topics([stack.settings.topic(t) for t in c.ALL_TOPICS])
        events, _ = await publish_made(emu, pg_log, stack.settings.topic(c.TOPIC_EVENTS))
        # the consumer reads the backlog a while after it happened, as in any backlog
        emu.advance_clock(timedelta(minutes=1))
        stop = asyncio.Event()
        options = ConsumerOptions(batch_size=1, poll_timeout_s=0.05)  # a batch per event: every one straddles
        async with Database(stack.settings) as db:
            consumer = asyncio.create_task(run_consumer(stack.settings, pg_log, db, stop, options=options))
            try:
                await wait_for(lambda: processed(pg_dsn, events), 60, "the backlog to be applied")
            finally:
                stop.set()
                await asyncio.wait_for(consumer, 30)
        assert await fetches(emu) == 1  # the `claimed` event's; both `updated` events are behind its answer
        assert expected_states(emu, [sandbox_id]) == {sandbox_id: State.LIVE}
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await db_states(conn) == {sandbox_id: State.LIVE}
            outcomes = sorted(
                (r["event_type"].rsplit(".", 1)[1], r["outcome"])
                for r in await conn.fetch(
                    "SELECT event_type, outcome FROM processed_events WHERE sandbox_id = $1 AND event_type LIKE $2",
                    sandbox_id,
                    "v2.core.claimable_sandbox.%",
                )
            )
        finally:
            await conn.close()
        # the claim's answer moved it to live; both updates are behind that answer
        assert outcomes == [("claimed", "applied"), ("created", "applied"), ("updated", "stale"), ("updated", "stale")]


async def processed(dsn: str, count: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM processed_events")) >= count
    finally:
        await conn.close()


async def test_the_batch_being_applied_answers_for_the_next_one(
    pg_settings: Settings, pg_log: PostgresEventLog, database: Database
) -> None:
    """The batch prepared while the previous one commits reads that batch's answers from memory (the table does
    not hold them yet): events created before such an answer cost no fetch; without it they are fetched."""
    knobs = Knobs(rate_limit_rps=0, delivery_enabled=False)
    async with emulator_stack(pg_settings, pg_log, knobs) as stack:
        emu = stack.emu
        async with StripeApi(stack.settings) as api:
            [sandbox_id] = await create_sandboxes(api, 1, "carried")
            emu.state.sandboxes.claim(sandbox_id, "new")
            [claimed] = [e for e in emu.state.store.events if e.type.endswith(".claimed")]
            body = orjson.dumps(claimed.notification())
            records = [Record("t", 0, 0, sandbox_id.encode(), body, (), 0)]
            emu.advance_clock(timedelta(minutes=1))
            answered = Seen(State.PENDING_ONBOARDING, emu.state.clock.now())
            applier = Applier(database.pool, "t.transitions", "t.state")
            preparer = BatchPreparer(applier, api, fetch_concurrency=4, not_found_attempts=1, not_found_delay_s=0)

            carried = await preparer.prepare(records, (), {sandbox_id: answered})
            assert await fetches(emu) == 0
            [observation] = carried.observations
            assert (observation.fetched, observation.observed) == (None, State.PENDING_ONBOARDING)

            alone = await preparer.prepare(records, ())
            assert await fetches(emu) == 1
            assert alone.observations[0].observed is State.PENDING_ONBOARDING
            assert alone.answers() == {sandbox_id: Seen(State.PENDING_ONBOARDING, alone.observations[0].at)}
