"""Crash safety: SIGKILL `processor consume` mid-batch and `processor relay` between commit and publish."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from processor import constants as c
from processor.consumer.inbound import Action, parse
from processor.dev.emulator.config import Knobs
from processor.eventlog.kafka.log import KafkaEventLog
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.lifecycle_harness import (
    check_paths,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    published,
    read_topic,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def spawn(command: str, settings: Settings, dsn: str, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))},
        "PROCESSOR_DATABASE_URL": dsn,
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": ",".join(settings.kafka_bootstrap_servers),
        "PROCESSOR_TOPIC_PREFIX": settings.topic_prefix,
        "STRIPE_API_KEY": settings.stripe_api_key.reveal() if settings.stripe_api_key else "",
        "STRIPE_API_BASE": settings.stripe_api_base,
        "PROCESSOR_STRIPE_MAX_RPS": "1000",
        "PROCESSOR_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "processor", command, *args], cwd=REPO, env=env)


async def count(dsn: str, query: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def stop_gracefully(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    for _ in range(300):
        if process.poll() is not None:
            return process.returncode
        await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError("the process did not stop within 30 s of SIGTERM")


async def test_killed_consumer_and_relay_lose_nothing_and_apply_nothing_twice(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """A consumer SIGKILLed mid-batch and a relay SIGKILLed between commit and publish, once restarted, leave
    every sandbox in Stripe's state with every transition published and none applied twice."""
    async with emulator_stack(kafka_settings, kafka_log, Knobs(rate_limit_rps=0, duplicate_rate=0.2)) as stack:
        async with StripeApi(stack.settings) as api:
            ids = await create_sandboxes(api, 150, "crash")
        drive(stack.emu, ids)
        await stack.emu.wait_for_deliveries(within_s=60)
        expected = expected_states(stack.emu, ids)
        events = await read_topic(kafka_log, stack.settings.topic(c.TOPIC_EVENTS))
        handled = {e.event_id for e in map(parse, events) if e.action is not Action.IGNORE}
        stack.emu.set_knobs(api_latency_s=0.1)  # slow fetches: the kill lands inside a batch

        consumer = spawn("consume", stack.settings, pg_dsn, "--no-relay", "--batch-size", "20")
        try:
            await wait_for(lambda: _between(pg_dsn, 60, len(handled)), 60, "the consumer to be part-way")
            consumer.kill()
            consumer.wait()
        finally:
            consumer.kill()
        applied_before = await count(pg_dsn, "SELECT count(*) FROM processed_events")
        assert 0 < applied_before < len(handled)

        consumer = spawn("consume", stack.settings, pg_dsn, "--no-relay", "--batch-size", "20")
        try:
            await wait_for(lambda: _all_processed(pg_dsn, len(handled)), 90, "the restarted consumer to finish")
            assert await stop_gracefully(consumer) == 0
        finally:
            consumer.kill()
        pending = await count(pg_dsn, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
        assert pending > 0  # nothing published yet: the relay's turn

        relay = spawn("relay", stack.settings, pg_dsn, "--batch-size", "5")
        try:
            await _wait_published_some(pg_dsn)
            relay.kill()
            relay.wait()
        finally:
            relay.kill()
        assert await count(pg_dsn, "SELECT count(*) FROM outbox WHERE published_at IS NULL") > 0
        relay = spawn("relay", stack.settings, pg_dsn)
        try:
            await wait_for(lambda: _drained(pg_dsn), 30, "the restarted relay to drain the outbox")
            assert await stop_gracefully(relay) == 0
        finally:
            relay.kill()

        pub = await published(kafka_log, stack.settings)
        check_paths(pub, expected)
        assert await count(pg_dsn, "SELECT count(*) FROM processed_events") == len(handled)
        transitions = await count(pg_dsn, "SELECT count(*) FROM sandbox_history WHERE kind = 'transition'")
        assert transitions == len(pub.transitions)


async def _between(dsn: str, low: int, high: int) -> bool:
    done = await count(dsn, "SELECT count(*) FROM processed_events")
    return low <= done < high


async def _all_processed(dsn: str, total: int) -> bool:
    return await count(dsn, "SELECT count(*) FROM processed_events") >= total


async def _drained(dsn: str) -> bool:
    return await count(dsn, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def _wait_published_some(dsn: str) -> None:
    """Return as soon as the relay marked its first rows (polled tightly so the kill lands mid-stream)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(3000):
            if await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"):
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    raise AssertionError("the relay published nothing within 30 s")
