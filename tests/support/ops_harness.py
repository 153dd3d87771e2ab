"""Shared pieces of the operator-tooling tests: the lifecycle harness of tests/consumer (emulator -> ingress ->
log), a worker (consumer + relay) that can be started and stopped, snapshots of what the store holds, thin
events published as the ingress would, and the `processor` command line run as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from processor import constants as c
from processor.consumer.loop import ConsumerOptions
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.lifecycle.messages import rfc3339
from processor.runtime.worker import WorkerOptions, run_worker
from processor.settings import Secret, Settings
from tests.support.lifecycle_harness import (
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
    "Cli",
    "Stack",
    "Store",
    "check_paths",
    "cli",
    "cli_env",
    "create_sandboxes",
    "drive",
    "emulator_stack",
    "expected_states",
    "publish_thin_events",
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


async def publish_thin_events(
    log: EventLog, settings: Settings, sandbox_ids: Sequence[str], per_sandbox: int, tag: str = "window"
) -> int:
    """`per_sandbox` distinct `updated` thin events per sandbox (ids `evt_test_{tag}_{n}_...`), published as
    the ingress would; returns how many."""
    records = []
    for n in range(per_sandbox):
        for sid in sandbox_ids:
            event_id = f"evt_test_{tag}_{n}_{sid[-12:]}"
            body = orjson.dumps(
                {
                    "id": event_id,
                    "object": "v2.core.event",
                    "type": "v2.core.claimable_sandbox.updated",
                    "created": rfc3339(datetime.now(UTC)),
                    "livemode": False,
                    "context": None,
                    "reason": None,
                    "related_object": {
                        "id": sid,
                        "type": "v2.core.claimable_sandbox",
                        "url": f"/v2/core/claimable_sandboxes/{sid}",
                    },
                }
            )
            headers = [
                (c.H_EVENT_ID, event_id.encode()),
                (c.H_EVENT_TYPE, b"v2.core.claimable_sandbox.updated"),
                (c.H_OBJECT, b"v2.core.event"),
                (c.H_RECEIVED_AT, rfc3339(datetime.now(UTC)).encode()),
                (c.H_SECRET_INDEX, b"0"),
            ]
            records.append((settings.topic(c.TOPIC_EVENTS), sid.encode(), body, headers))
    await log.publish_many(records)
    return len(records)


@dataclass(frozen=True)
class Cli:
    """What an operator sees after running a `processor` command."""

    code: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        """stderr without the log's JSON lines: what the command itself told the operator (messages, a bar)."""
        return "\n".join(line for line in self.stderr.splitlines() if not line.startswith('{"ts":'))


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment an operator would export to point the CLI at what `settings` point at."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    assert settings.database_url is not None
    env["PROCESSOR_DATABASE_URL"] = settings.database_url.reveal()
    env["PROCESSOR_TOPIC_PREFIX"] = settings.topic_prefix
    if settings.kafka_bootstrap_servers:
        env["PROCESSOR_KAFKA_BOOTSTRAP_SERVERS"] = ",".join(settings.kafka_bootstrap_servers)
    if settings.stripe_api_key is not None:
        env["STRIPE_API_KEY"] = settings.stripe_api_key.reveal()
    if settings.stripe_api_base:
        env["STRIPE_API_BASE"] = settings.stripe_api_base
    env["PROCESSOR_STRIPE_MAX_RPS"] = str(settings.stripe_max_rps)
    return env


async def cli(settings: Settings, *args: str, answer: str | None = None, timeout_s: float = 60) -> Cli:
    """`python -m processor ARGS` as a subprocess, without blocking this event loop (the emulator answers from
    it). Its stdin is not a terminal, unless `answer` is given: then a terminal on which the operator types it."""
    terminal, typed = pty.openpty() if answer is not None else (None, None)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "processor",
            *args,
            stdin=asyncio.subprocess.DEVNULL if typed is None else typed,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(settings),
        )
        if terminal is not None and answer is not None:
            os.write(terminal, answer.encode() + b"\n")
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    finally:
        for fd in (terminal, typed):
            if fd is not None:
                os.close(fd)
    assert process.returncode is not None
    return Cli(process.returncode, out.decode(), err.decode())
