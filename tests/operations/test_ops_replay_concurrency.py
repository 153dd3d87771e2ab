"""Replays started at once never stall the process: each holds its run lock on a connection of its own, and a
process runs only a few at a time (the rest are refused at once, not queued)."""

from __future__ import annotations

import asyncio

from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.replay import ReplayReport, ReplayRequest, ReplaysBusy, replay
from processor.settings import Settings


async def test_replays_started_at_once_all_end(pg_settings: Settings, pg_log: PostgresEventLog) -> None:
    """Seen under the fuzzer: ten replays from the operator API each held a pooled connection for its lock and
    waited for a second one; every connection was a lock holder, no replay ever ended and nothing else in the
    process got a connection. With a pool of three, six replays at once must all end: run or refused."""
    async with Database(pg_settings, max_size=3) as db:
        runs = [replay(pg_settings, pg_log, db, ReplayRequest("window", since="1h"), run_id=f"at-once-{n}")
                for n in range(6)]
        async with asyncio.timeout(20):
            results = await asyncio.gather(*runs, return_exceptions=True)
        # the pool is whole again: a query gets a connection at once
        async with asyncio.timeout(5):
            assert await db.pool.fetchval("SELECT 1") == 1
    ran = [r for r in results if isinstance(r, ReplayReport)]
    refused = [r for r in results if isinstance(r, ReplaysBusy)]
    assert ran and len(ran) + len(refused) == 6, results
