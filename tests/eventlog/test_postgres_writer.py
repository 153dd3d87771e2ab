"""The PostgreSQL log's writer under a stalled database: bounded memory, bounded waits, honest readiness, and
calls that are all or nothing. The stall is real: a second session holds a lock on the log's table."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from processor.db.pool import Database
from processor.errors import LogUnavailable
from processor.eventlog.base import Record, TopicPartition
from processor.eventlog.factory import open_event_log
from processor.eventlog.postgres.log import PostgresEventLog
from processor.eventlog.postgres.writer import WriterLimits
from processor.settings import Settings

BODY_BYTES = 64 * 1024
TOPIC = "writer.test"


def body(number: int) -> bytes:
    """A 64 KiB body whose first 8 bytes say which publish it was."""
    return f"{number:08d}".encode() * (BODY_BYTES // 8)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def all_records(log: PostgresEventLog) -> list[Record]:
    records: list[Record] = []
    for tp, end in sorted((await log.end_offsets(TOPIC)).items()):
        records += await log.read(tp, 0, end)
    return records


class TableLock:
    """A second session holding a lock on log_records that every append waits for (as a long migration or a
    VACUUM FULL would), until `release()`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def hold(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.execute("BEGIN; LOCK TABLE log_records IN SHARE MODE")

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.execute("ROLLBACK")
            await conn.close()


@pytest.fixture
async def table_lock(pg_dsn: str) -> AsyncIterator[TableLock]:
    lock = TableLock(pg_dsn)
    yield lock
    await lock.release()


async def test_stalled_writer_refuses_beyond_its_byte_bound_is_unready_and_loses_nothing(
        database: Database, table_lock: TableLock) -> None:
    """While a lock blocks every append: publishes are held up to the byte bound and the next one fails at once
    (the ingress answers 503), a caller that gives up frees its room, readiness is red; once the lock goes,
    readiness is green again and every publish that was answered success is in the log exactly once."""
    limits = WriterLimits(max_queued_bytes=4 * (BODY_BYTES + 64), write_timeout_s=300, stalled_after_s=0.5)
    async with PostgresEventLog(database.pool, partitions=2, limits=limits) as log:
        await log.ensure_topics([TOPIC])
        await log.publish(TOPIC, b"warm-up", b"0")
        assert log.healthy()
        await table_lock.hold()
        held = [asyncio.create_task(log.publish(TOPIC, b"k0", body(0)))]
        await wait_until(lambda: not log.healthy())  # the write of body 0 waits for the lock
        held += [asyncio.create_task(log.publish(TOPIC, f"k{n}".encode(), body(n))) for n in (1, 2, 3)]
        await asyncio.sleep(0)  # they queue behind the stalled write
        assert not any(task.done() for task in held), "a publish finished while the log could not write"

        started = time.monotonic()
        with pytest.raises(LogUnavailable):
            await asyncio.wait_for(log.publish(TOPIC, b"k4", body(4)), timeout=30)
        assert time.monotonic() - started < 5, "a publish over the bound waited instead of failing at once"
        assert not log.healthy()

        gave_up = held.pop()  # body 3's caller gives up (the ingress's publish timeout), which frees its room
        gave_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        held.append(asyncio.create_task(log.publish(TOPIC, b"k5", body(5))))
        await asyncio.sleep(0)
        assert not held[-1].done(), "a caller that gave up still held room in the writer"

        await table_lock.release()
        published = await asyncio.wait_for(asyncio.gather(*held), timeout=60)
        assert log.healthy()
        seen = collections.Counter(r.value[:8] for r in await all_records(log) if r.key != b"warm-up")
        assert seen == {body(n)[:8]: 1 for n in (0, 1, 2, 5)}, "a publish answered success is missing or doubled"
        assert len(published) == 4


async def test_a_write_blocked_past_the_timeout_fails_cleanly_and_readiness_recovers_without_traffic(
        database: Database, table_lock: TableLock) -> None:
    """A write blocked longer than the write timeout fails (no caller waits for ever), is rolled back (not in the
    log later), readiness is red; after the lock goes readiness turns green again with no traffic at all."""
    limits = WriterLimits(write_timeout_s=1.0, stalled_after_s=300)
    async with PostgresEventLog(database.pool, partitions=2, limits=limits) as log:
        await log.ensure_topics([TOPIC])
        await log.publish(TOPIC, b"warm-up", b"0")
        await table_lock.hold()
        with pytest.raises(LogUnavailable):
            await asyncio.wait_for(log.publish(TOPIC, b"k1", body(1)), timeout=30)
        assert not log.healthy()

        await table_lock.release()
        await wait_until(log.healthy)
        await asyncio.wait_for(log.publish(TOPIC, b"k2", body(2)), timeout=30)
        values = [r.value[:8] for r in await all_records(log) if r.key != b"warm-up"]
        assert values == [body(2)[:8]], "the timed-out write reached the log after its caller was told it failed"


FAIL_FIRST_APPEND = """
CREATE SEQUENCE append_attempts;
CREATE FUNCTION fail_first_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- sequences are not transactional: only the very first append statement fails, retries succeed
    IF nextval('append_attempts') = 1 THEN
        RAISE EXCEPTION 'injected fault: the first append fails';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fail_first_append BEFORE INSERT ON log_records
    FOR EACH STATEMENT EXECUTE FUNCTION fail_first_append();
"""


async def test_publish_many_retried_after_a_failed_write_keeps_each_keys_order(
        database: Database, pg_dsn: str) -> None:
    """A caller that retries a failed publish_many (as the relay does) finds each key's records in the log in
    the order it published them, each exactly once: a failed call left nothing of itself behind."""
    async with PostgresEventLog(database.pool, partitions=2) as log:
        await log.ensure_topics([TOPIC])
        fault = await asyncpg.connect(pg_dsn)
        try:
            await fault.execute(FAIL_FIRST_APPEND)
        finally:
            await fault.close()
        # more records than one group commit writes, so that the old writer split the call in two transactions
        records = [(TOPIC, f"k{n % 10}".encode(), f"{n:05d}".encode(), ()) for n in range(2500)]
        failures = 0
        for _attempt in range(3):
            try:
                await asyncio.wait_for(log.publish_many(records), timeout=60)
                break
            except LogUnavailable:
                failures += 1
        assert failures == 1
        firsts: dict[bytes | None, list[int]] = collections.defaultdict(list)
        seen: collections.Counter[bytes] = collections.Counter()
        for record in await all_records(log):  # per partition in offset order, so per key in log order
            if record.value not in seen:
                firsts[record.key].append(int(record.value))
            seen[record.value] += 1
        assert all(numbers == sorted(numbers) for numbers in firsts.values()), "a key's records were reordered"
        assert set(seen.values()) == {1} and len(seen) == 2500


async def test_stopping_the_log_during_a_stalled_write_answers_its_caller(
        database: Database, table_lock: TableLock) -> None:
    """A log stopped while its write is blocked tells the caller the write failed instead of leaving it waiting
    for ever (a caller that waits for ever never answers its webhook)."""
    limits = WriterLimits(write_timeout_s=300, stalled_after_s=0.5)
    log = PostgresEventLog(database.pool, partitions=2, limits=limits)
    await log.start()
    try:
        await log.ensure_topics([TOPIC])
        await log.publish(TOPIC, b"warm-up", b"0")
        await table_lock.hold()
        blocked = asyncio.create_task(log.publish(TOPIC, b"k1", body(1)))
        await wait_until(lambda: not log.healthy())
    finally:
        await asyncio.wait_for(log.stop(), timeout=60)
    with pytest.raises(LogUnavailable):
        await asyncio.wait_for(blocked, timeout=30)
    with pytest.raises(LogUnavailable):
        await log.publish(TOPIC, b"k2", body(2))


async def test_writes_go_on_while_every_shared_connection_is_busy(pg_settings: Settings, database: Database) -> None:
    """The API, operator jobs and the consumer share the process's pool; the ingress's writes must never wait
    behind them for a connection. Seen under the fuzzer: ten API replays held every pooled connection and every
    webhook got 503 for good."""
    async with open_event_log(pg_settings, database) as log:
        held = [await database.pool.acquire() for _ in range(database.max_size)]
        try:
            async with asyncio.timeout(10):
                published = await log.publish(TOPIC, b"key", b"value")
        finally:
            for conn in held:
                await database.pool.release(conn)
        tp = TopicPartition(published.topic, published.partition)
        assert [r.value for r in await log.read(tp, published.offset, published.offset + 1)] == [b"value"]
