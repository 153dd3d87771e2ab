"""Poison events go to the DLQ with the §6 headers; retriable Stripe failures never do."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from processor import constants as c
from processor.consumer.inbound import Action, parse
from processor.consumer.loop import ConsumerOptions, run_consumer
from processor.db.pool import Database
from processor.dev.emulator.config import Knobs
from processor.eventlog.base import EventLog
from processor.eventlog.kafka.log import KafkaEventLog
from processor.lifecycle import State
from processor.outbox.relay import run_relay
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.lifecycle_harness import (
    check_paths,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    published,
    read_topic,
    settled,
    wait_for,
)
from tests.support.schemas import record_view, validate


@contextlib.asynccontextmanager
async def consumer_and_relay(
    settings: Settings,
    log: EventLog,
    db: Database,
    stripe: StripeApi,
    metrics: WorkerMetrics,
    batch_size: int | None = None,
) -> AsyncIterator[None]:
    stop, wakeup = asyncio.Event(), asyncio.Event()
    options = ConsumerOptions(retry_base_s=0.1, retry_max_s=1.0, not_found_delay_s=0.05)
    if batch_size is not None:
        options = replace(options, batch_size=batch_size)
    tasks = [
        asyncio.create_task(
            run_consumer(settings, log, db, stop, stripe=stripe, metrics=metrics, options=options, outbox_signal=wakeup)
        ),
        asyncio.create_task(run_relay(settings, log, db, stop, metrics=metrics, wakeup=wakeup)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def thin_event(event_id: str, event_type: str, sandbox_id: str, context: str | None) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "v2.core.event",
            "type": event_type,
            "livemode": False,
            "context": context,
            "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": None,
            "related_object": {
                "id": sandbox_id,
                "type": "v2.core.claimable_sandbox",
                "url": f"/v2/core/claimable_sandboxes/{sandbox_id}",
            },
        }
    ).encode()


def headers(event_id: str, event_type: str, kind: str = "v2.core.event") -> list[tuple[str, bytes]]:
    return [
        (c.H_EVENT_ID, event_id.encode()),
        (c.H_EVENT_TYPE, event_type.encode()),
        (c.H_OBJECT, kind.encode()),
        (c.H_RECEIVED_AT, b"2026-11-22T01:00:00.000Z"),
        (c.H_SECRET_INDEX, b"0"),
    ]


async def test_anomaly_malformed_and_unknown_sandbox_land_in_the_dlq(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """An impossible move (expired after claimed), a non-JSON record and an event about a sandbox Stripe does not
    know are dead-lettered with error class, message, attempts and origin; the sandbox keeps its state."""
    async with emulator_stack(kafka_settings, kafka_log) as stack:
        settings = replace(stack.settings, database_url=Secret(pg_dsn))
        async with StripeApi(settings) as api:
            [sandbox_id] = await create_sandboxes(api, 1, "dlq")
            stack.emu.state.sandboxes.claim(sandbox_id, "new")
            await stack.emu.wait_for_deliveries()
            metrics = WorkerMetrics()
            async with Database(settings) as db, consumer_and_relay(settings, kafka_log, db, api, metrics):
                await wait_for(lambda: settled(pg_dsn, {sandbox_id: State.PENDING_ONBOARDING}), 30, "the claim")
                record = stack.emu.state.store.sandboxes[sandbox_id]
                record.status = "expired"  # Stripe now says what the lifecycle forbids after a claim
                topic = settings.topic(c.TOPIC_EVENTS)
                expired = "evt_test_anomaly_expired_after_claimed"
                await kafka_log.publish(
                    topic,
                    sandbox_id.encode(),
                    thin_event(expired, "v2.core.claimable_sandbox.expired", sandbox_id, record.account),
                    headers(expired, "v2.core.claimable_sandbox.expired"),
                )
                malformed = await kafka_log.publish(
                    topic,
                    b"evt_test_garbage",
                    b'{"id": "evt_test_garbage", "ty',
                    headers("evt_test_garbage", "unknown"),
                )
                missing = "evt_test_missing_sandbox"
                await kafka_log.publish(
                    topic,
                    b"clmsbx_test_nosuchsandbox",
                    thin_event(missing, "v2.core.claimable_sandbox.updated", "clmsbx_test_nosuchsandbox", None),
                    headers(missing, "v2.core.claimable_sandbox.updated"),
                )
                dlq_topic = settings.topic(c.TOPIC_DLQ)

                async def three_dead() -> bool:
                    return len(await read_topic(kafka_log, dlq_topic)) >= 3

                await wait_for(three_dead, 30, "three DLQ records")
        dead = await read_topic(kafka_log, dlq_topic)
        assert len(dead) == 3
        by_class = {}
        for rec in dead:
            view = record_view(rec.key, rec.headers, rec.value) if rec.key != b"evt_test_garbage" else None
            if view is not None:
                validate("dlq-record", view)
            by_class[rec.header(c.H_ERROR_CLASS)] = rec
        assert set(by_class) == {"lifecycle_anomaly", "malformed_event", "sandbox_not_found"}
        anomaly = by_class["lifecycle_anomaly"]
        assert anomaly.key == sandbox_id.encode()
        assert "expired cannot follow pending_onboarding" in (anomaly.header(c.H_ERROR_MESSAGE) or "")
        assert anomaly.header(c.H_EVENT_ID) == expired
        assert anomaly.header(c.H_ATTEMPTS) == "1"
        garbage = by_class["malformed_event"]
        assert garbage.value == b'{"id": "evt_test_garbage", "ty'  # the input bytes, unchanged
        assert garbage.header(c.H_ORIGINAL_TOPIC) == topic
        assert garbage.header(c.H_ORIGINAL_PARTITION) == str(malformed.partition)
        assert garbage.header(c.H_ORIGINAL_OFFSET) == str(malformed.offset)
        assert int(by_class["sandbox_not_found"].header(c.H_ATTEMPTS) or 0) >= 2
        assert (
            metrics.registry.get_sample_value("processor_dlq_records_total", {"error_class": "lifecycle_anomaly"}) == 1
        )
        conn = await asyncpg.connect(pg_dsn)
        try:
            state = await conn.fetchval("SELECT state FROM sandboxes WHERE id = $1", sandbox_id)
            anomalies = await conn.fetch("SELECT event_id, current_state, observed_state FROM anomalies")
            processed = await conn.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", expired)
        finally:
            await conn.close()
        assert state == State.PENDING_ONBOARDING
        assert [tuple(a) for a in anomalies] == [(expired, "pending_onboarding", "expired")]
        assert processed == 0  # so a replay from the DLQ after a fix is not mistaken for a duplicate


async def test_stripe_errors_are_retried_never_dead_lettered(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """With half of all Stripe calls failing (429/500/503), nothing reaches the DLQ and every sandbox still ends
    in Stripe's state: failed fetches pause their partition and are retried."""
    knobs = Knobs(rate_limit_rps=0, api_error_rate=0.5, api_error_statuses=(429, 500, 503))
    async with emulator_stack(kafka_settings, kafka_log, knobs) as stack:
        settings = replace(stack.settings, database_url=Secret(pg_dsn))
        stack.emu.set_knobs(api_error_rate=0.0)
        async with StripeApi(settings) as creator:
            ids = await create_sandboxes(creator, 60, "retry")
        stack.emu.set_knobs(api_error_rate=0.5)
        drive(stack.emu, ids)
        await stack.emu.wait_for_deliveries()
        expected = expected_states(stack.emu, ids)
        metrics = WorkerMetrics()
        # two tries per call inside the client, so partitions really get paused and rewound
        async with (
            StripeApi(settings, max_attempts=2, base_delay_s=0.01, on_response=metrics.observe_stripe) as api,
            Database(settings) as db,
            consumer_and_relay(settings, kafka_log, db, api, metrics),
        ):
            await wait_for(lambda: settled(pg_dsn, expected), 90, "every sandbox to reach Stripe's state")
        assert await read_topic(kafka_log, settings.topic(c.TOPIC_DLQ)) == []
        sample = metrics.registry.get_sample_value
        failures = sum(sample("processor_stripe_requests_total", {"status": s}) or 0 for s in ("429", "500", "503"))
        assert failures > 0
        assert (sample("processor_consumer_retries_total", {"error_class": "stripe_error"}) or 0) > 0


async def test_pipelined_batches_with_rewinds_and_duplicates_apply_every_event_once(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """With small batches (so the next batch is always fetched while the previous one commits), duplicates and
    partitions rewound after Stripe errors, every delivered event is processed, each transition is published
    on one gap-free path, and the duplicates are recognised."""
    knobs = Knobs(rate_limit_rps=0, duplicate_rate=0.3, api_error_rate=0.3, api_error_statuses=(429, 500))
    async with emulator_stack(kafka_settings, kafka_log, knobs) as stack:
        settings = replace(stack.settings, database_url=Secret(pg_dsn))
        stack.emu.set_knobs(api_error_rate=0.0)
        async with StripeApi(settings) as creator:
            ids = await create_sandboxes(creator, 40, "pipeline")
        drive(stack.emu, ids)
        await stack.emu.wait_for_deliveries()
        stack.emu.set_knobs(api_error_rate=0.3)
        expected = expected_states(stack.emu, ids)
        delivered = await read_topic(kafka_log, settings.topic(c.TOPIC_EVENTS))
        handled = {event.event_id for event in map(parse, delivered) if event.action is not Action.IGNORE}
        assert len(delivered) > len(handled)  # the emulator did deliver duplicates
        metrics = WorkerMetrics()

        async def processed() -> set[str]:
            conn = await asyncpg.connect(pg_dsn)
            try:
                return {row["event_id"] for row in await conn.fetch("SELECT event_id FROM processed_events")}
            finally:
                await conn.close()

        async def all_processed() -> bool:
            return len(await processed()) >= len(handled) and await settled(pg_dsn, expected)

        async with (
            StripeApi(settings, max_attempts=2, base_delay_s=0.01, on_response=metrics.observe_stripe) as api,
            Database(settings) as db,
            consumer_and_relay(settings, kafka_log, db, api, metrics, batch_size=7),
        ):
            # a sandbox can reach its state from a later event while an earlier one waits for its retry
            await wait_for(all_processed, 90, "every event processed and every sandbox in Stripe's state")
        retries = metrics.registry.get_sample_value("processor_consumer_retries_total", {"error_class": "stripe_error"})
        assert (retries or 0) > 0
        assert await processed() == handled
        check_paths(await published(kafka_log, settings), expected)
        assert await read_topic(kafka_log, settings.topic(c.TOPIC_DLQ)) == []
        assert (metrics.registry.get_sample_value("processor_consumer_events_total", {"outcome": "duplicate"}) or 0) > 0
