"""Shared pieces of the operator-tooling tests: the lifecycle harness of tests/consumer (emulator -> ingress ->
log), a worker (consumer + relay) that can be started and stopped, and snapshots of what the store holds."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from processor.consumer import ConsumerOptions
from processor.database import Database
from processor.eventlog.base import EventLog
from processor.settings import Secret, Settings
from processor.worker import WorkerOptions, run_worker

# the consumer tests' harness is a sibling directory without __init__.py (unique basenames, rootdir imports)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "consumer"))
from lifecycle_harness import (
    Stack,
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

__all__ = [
    "Stack",
    "Store",
    "check_paths",
    "create_sandboxes",
    "drive",
    "emulator_stack",
    "expected_states",
    "published",
    "read_topic",
    "settled",
    "snapshot",
    "wait_for",
    "with_db",
    "worker",
]


def with_db(settings: Settings, dsn: str) -> Settings:
    return replace(settings, database_url=Secret(dsn))


@contextlib.asynccontextmanager
async def worker(settings: Settings, log: EventLog, db: Database) -> AsyncIterator[None]:
    """Consumer + relay in this event loop until the block ends (then a graceful stop)."""
    stop = asyncio.Event()
    options = WorkerOptions(consumer=ConsumerOptions(batch_size=500, not_found_delay_s=0.05))
    task = asyncio.create_task(run_worker(settings, log, db, stop, options))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass(frozen=True)
class Store:
    """What a user of the store would notice changing."""

    sandboxes: list[tuple[Any, ...]]
    history: int
    processed: int
    outbox: int


async def snapshot(dsn: str) -> Store:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, state, sequence, version, flags::text, updated_at FROM sandboxes ORDER BY id"
        )
        return Store(
            [tuple(r) for r in rows],
            int(await conn.fetchval("SELECT count(*) FROM sandbox_history")),
            int(await conn.fetchval("SELECT count(*) FROM processed_events")),
            int(await conn.fetchval("SELECT count(*) FROM outbox")),
        )
    finally:
        await conn.close()
