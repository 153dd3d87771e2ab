"""End to end on real services: emulator webhooks -> ingress -> log -> consumer -> PostgreSQL -> relay -> topics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg

from processor.consumer.loop import ConsumerOptions
from processor.db.pool import Database
from processor.dev.emulator.config import Knobs
from processor.eventlog.base import EventLog
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.runtime.metrics import WorkerMetrics
from processor.runtime.worker import WorkerOptions, run_worker
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.lifecycle_harness import (
    check_paths,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    published,
    settled,
    wait_for,
)


@contextlib.asynccontextmanager
async def worker(settings: Settings, log: EventLog, db: Database) -> AsyncIterator[WorkerMetrics]:
    """Consumer + relay in this event loop until the block ends (then a graceful stop)."""
    stop = asyncio.Event()
    metrics = WorkerMetrics()
    options = WorkerOptions(consumer=ConsumerOptions(batch_size=500))
    task = asyncio.create_task(run_worker(settings, log, db, stop, options, metrics))
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def deauthorized_ids(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id FROM sandboxes WHERE (flags->>'app_deauthorized')::boolean")
    finally:
        await conn.close()
    return {r["id"] for r in rows}


async def run_end_to_end(settings: Settings, log: EventLog, dsn: str, count: int,
                         reader: EventLog | None = None) -> WorkerMetrics:
    """Drive `count` sandboxes through emulator -> ingress -> `log` -> worker; check what was published by
    reading it through `reader` (a downstream service's client; default `log`)."""
    knobs = Knobs(rate_limit_rps=0, duplicate_rate=0.2, reorder_window_s=0.3)
    async with emulator_stack(settings, log, knobs) as stack:
        async with StripeApi(stack.settings) as api:
            ids = await create_sandboxes(api, count, "e2e")
        db_settings = replace(stack.settings, database_url=Secret(dsn))
        async with Database(db_settings) as db, worker(db_settings, log, db) as metrics:
            drive(stack.emu, ids)
            await stack.emu.wait_for_deliveries(within_s=120)
            expected = expected_states(stack.emu, ids)
            await wait_for(lambda: settled(dsn, expected), 90, "every sandbox to reach Stripe's state")
            uninstalled = {sid for sid in ids if not stack.emu.state.store.sandboxes[sid].app_authorized}

            async def flags_match() -> bool:
                return await deauthorized_ids(dsn) == uninstalled

            # states can settle before the last v1 account events (they change no state) are consumed
            await wait_for(flags_match, 30, "the deauthorized flags to match the uninstalled apps")
        pub = await published(reader or log, stack.settings)
        check_paths(pub, expected)
        # no crash here: every transition id was published exactly once
        assert pub.raw_transition_count == len(pub.transitions)
        conn = await asyncpg.connect(dsn)
        try:
            history = await conn.fetchval("SELECT count(*) FROM sandbox_history WHERE kind = 'transition'")
        finally:
            await conn.close()
        assert history == len(pub.transitions)
        assert uninstalled  # the run did exercise the flag
    return metrics


async def test_every_sandbox_ends_in_stripes_state_on_kafka(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """500 sandboxes down every path with 20 % duplicate and reordered webhooks end in Stripe's state, each
    transition published exactly once on one gap-free path, and duplicates cost no second effect."""
    metrics = await run_end_to_end(kafka_settings, kafka_log, pg_dsn, 500)
    sample = metrics.registry.get_sample_value
    assert (sample("processor_consumer_events_total", {"outcome": "duplicate"}) or 0) > 0
    fetches = sample("processor_stripe_requests_total", {"status": "200"}) or 0
    applied = sample("processor_consumer_events_total", {"outcome": "applied"}) or 0
    # one fetch per sandbox per batch, however many of its events the batch holds
    assert 0 < fetches <= applied + (sample("processor_consumer_events_total", {"outcome": "stale"}) or 0)


async def test_every_sandbox_ends_in_stripes_state_on_the_postgres_log(
    pg_settings: Settings, pg_log: PostgresEventLog, database: Database, pg_dsn: str
) -> None:
    """The same end-to-end run on the embedded PostgreSQL event log (50 sandboxes)."""
    await pg_log.ensure_topics(
        [pg_settings.topic(t) for t in ("stripe.events", "stripe.events.dlq", "sandbox.transitions", "sandbox.state")]
    )
    await run_end_to_end(pg_settings, pg_log, pg_dsn, 50)
