"""The worker rides out failures of the event log under its consumer: it joins again and goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from processor.consumer.loop import ConsumerOptions
from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.runtime.worker import WorkerOptions, WorkerStatus, run_worker
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.lifecycle_harness import Stack, create_sandboxes, emulator_stack, expected_states, settled, wait_for

#: per statement of the PostgreSQL log's consumer: the table a second session locks so that the statement
#: waits (and can be killed while in flight), the lock mode, and how to recognise the statement
STATEMENTS = {
    "fetch": ("log_records", "ACCESS EXCLUSIVE", "%FROM log_records r WHERE%"),
    "heartbeat": ("log_group_members", "EXCLUSIVE", "INSERT INTO log_group_members%"),
    "commit": ("log_group_offsets", "EXCLUSIVE", "INSERT INTO log_group_offsets%"),
}


@contextlib.asynccontextmanager
async def worker(settings: Settings, log: PostgresEventLog, db: Database) -> AsyncIterator[WorkerStatus]:
    """Consumer and relay until the block ends; fails at once if the worker ends before it is told to stop."""
    stop, status = asyncio.Event(), WorkerStatus()
    options = WorkerOptions(consumer=ConsumerOptions(poll_timeout_s=0.2, retry_base_s=0.1, retry_max_s=0.5))
    task = asyncio.create_task(run_worker(settings, log, db, stop, options, status=status), name="worker")
    try:
        yield status
        assert not task.done(), f"the worker ended: {task.exception()!r}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def settle(stack: Stack, dsn: str, ids: list[str], status: WorkerStatus) -> None:
    """Wait until Stripe's state of `ids` is applied and published, failing at once if the worker died."""
    expected = expected_states(stack.emu, ids)

    async def done() -> bool:
        assert all(not task.done() for task in status.tasks), "a part of the worker ended"
        return await settled(dsn, expected)

    await wait_for(done, 60, "the sandboxes to be applied")


async def waiting_backend(watcher: asyncpg.Connection, pattern: str, timeout_s: float = 30.0) -> int:
    """The pid of the backend whose statement matching `pattern` waits for a lock."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid = await watcher.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE $1 LIMIT 1", pattern)
        if pid is not None:
            return int(pid)
        assert time.monotonic() < deadline, f"no statement like {pattern!r} came to wait for the lock"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("statement", sorted(STATEMENTS))
async def test_worker_goes_on_after_its_consumers_connection_is_killed(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str, statement: str
) -> None:
    """The consumer's database connection is terminated in the middle of a fetch, a heartbeat or a commit; the
    worker keeps running, its consumer joins again and applies the events that come after."""
    table, mode, pattern = STATEMENTS[statement]
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = stack.settings
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, pg_log, db) as status:
            before = await create_sandboxes(api, 4, "before")
            await settle(stack, pg_dsn, before, status)
            blocker, watcher = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
            try:
                lock = blocker.transaction()
                await lock.start()
                await blocker.execute(f"LOCK TABLE {table} IN {mode} MODE")
                after = await create_sandboxes(api, 4, "after")  # events to fetch, apply and commit
                pid = await waiting_backend(watcher, pattern)
                assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
                await lock.rollback()
            finally:
                await blocker.close()
                await watcher.close()
            await settle(stack, pg_dsn, before + after, status)
            await wait_for(lambda: _now(status.ready()), 30, "the worker to be ready again")


async def test_worker_rides_out_a_database_that_refuses_connections(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str, pg_server_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the database of the log refuses every connection, the worker is not ready and its consumer retries,
    saying so once (not once per attempt); once the database is back, it is ready and applies new events."""
    caplog.set_level(logging.DEBUG, logger="processor.consumer.loop")
    probe = await asyncpg.connect(pg_dsn)
    try:
        name = await probe.fetchval("SELECT current_database()")
    finally:
        await probe.close()
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = stack.settings
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, pg_log, db) as status:
            before = await create_sandboxes(api, 4, "before")
            await settle(stack, pg_dsn, before, status)
            await wait_for(lambda: _now(status.ready()), 30, "the worker to be ready")
            admin = await asyncpg.connect(pg_server_dsn)
            try:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)

                def retries() -> int:
                    return sum("still unavailable" in r.getMessage() for r in caplog.records)

                await wait_for(lambda: _now(retries() >= 3), 60, "the consumer to retry a few times")
                assert not status.ready()
            finally:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                await admin.close()
            await wait_for(lambda: _now(status.ready()), 60, "the worker to be ready again")
            after = await create_sandboxes(api, 4, "after")
            await settle(stack, pg_dsn, before + after, status)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("lost the event log" in m for m in messages) == 1
    assert sum("reads the event log again" in m for m in messages) == 1


async def _now(value: bool) -> bool:
    return value
