"""The PostgreSQL log's consumer: a seek wins over a fetch that was in flight when it happened."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from processor.eventlog.base import TopicPartition
from processor.eventlog.postgres.log import PostgresEventLog


async def wait_until_fetch_waits_for_lock(watcher: asyncpg.Connection, timeout_s: float = 30.0) -> None:
    """Return once a consumer's read of log_records is blocked on a lock in this database."""
    deadline = time.monotonic() + timeout_s
    while not await watcher.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%FROM log_records r%'"
    ):
        assert time.monotonic() < deadline, "the consumer's fetch never reached the lock"
        await asyncio.sleep(0.05)


async def test_a_rewind_during_a_fetch_in_flight_is_not_overwritten(pg_log: PostgresEventLog, pg_dsn: str) -> None:
    """A seek made while a fetch's query is running (the rewind after a retriable error) decides where reading
    goes on: the records that fetch read are dropped and everything from the sought offset is delivered."""
    topic = f"rewind-{uuid.uuid4().hex[:8]}"
    await pg_log.ensure_topics([topic], partitions=1)
    tp = TopicPartition(topic, 0)
    for i in range(10):
        await pg_log.publish(topic, b"k", b"%d" % i)
    async with pg_log.consumer("rewinders", [topic]) as consumer:
        first: list[int] = []
        while len(first) < 10:
            first.extend(r.offset for r in await consumer.poll(max_records=10, timeout_s=1.0))
        assert first == list(range(10))
        for i in range(10, 15):
            await pg_log.publish(topic, b"k", b"%d" % i)
        blocker = await asyncpg.connect(pg_dsn)
        try:
            # the next fetch's query waits behind this lock, so the seek lands while it is in flight
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("LOCK TABLE log_records IN ACCESS EXCLUSIVE MODE")
            polling = asyncio.create_task(consumer.poll(max_records=100, timeout_s=60.0))
            watcher = await asyncpg.connect(pg_dsn)
            try:
                await wait_until_fetch_waits_for_lock(watcher)
            finally:
                await watcher.close()
            await consumer.seek(tp, 3)
            await lock.rollback()
            delivered = [r.offset for r in await asyncio.wait_for(polling, 60)]
        finally:
            await blocker.close()
    assert delivered == list(range(3, 15))
