"""The outbox relay: publishes committed outbox rows to their topics in id order, then marks them published.

Order per key: only one relay publishes at a time, and it takes rows in id order, which per sandbox is the order
they were committed in. The leader holds a lease, a session-level advisory lock on a connection of its own, so
a dead leader's lease ends with its connection and another relay takes over; the others wait for it.
Fenced: a lease alone cannot stop a leader whose connection died while its publish was in flight (its write
would land after the new leader's, leaving a stale last snapshot on the compacted sandbox.state). So a new
leader first claims the relay's role on the log (EventLog.fenced_publisher: Kafka's transactional producer
epoch, the PostgreSQL log's generation), and the log refuses every later write of the old leader.
At least once: rows are marked published only after the log acknowledged them, in the same transaction that
locked them; a crash in between publishes them again with the same message id (CloudEvents `id` for
transitions, `{sandbox}:v{version}` for snapshots), and downstream deduplicates by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from processor.backoff import backoff_delay
from processor.db.pool import DATABASE_ERRORS, Database
from processor.errors import DatabaseUnavailable, LogUnavailable
from processor.eventlog.base import EventLog
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings

log = logging.getLogger(__name__)

#: an arbitrary constant naming the relay's leader lease (pg advisory lock key)
RELAY_LOCK_ID = 0x5A4D_0002
#: the relay's role on the log (Kafka transactional id), after the deployment's topic prefix
RELAY_ROLE = "outbox-relay"
DEFAULT_BATCH = 1000
#: how long an idle relay waits for a wake-up before looking again (the in-process signal is immediate)
DEFAULT_IDLE_S = 0.2
#: published rows are kept this long (for inspection and repair), then deleted
DEFAULT_RETENTION_S = 3600.0
_CLEANUP_INTERVAL_S = 60.0


def relay_role(settings: Settings) -> str:
    """The relay's role on the log: one per deployment, so relays of other deployments never fence ours."""
    return settings.topic(RELAY_ROLE)


class OutboxRelay:
    """`await OutboxRelay(log, db, role=...).run(stop_event)`; `publish_once()` is one step, for tests and tools,
    and `close()` gives up the lease."""

    def __init__(
        self,
        log_: EventLog,
        database: Database,
        *,
        role: str,
        metrics: WorkerMetrics | None = None,
        batch_size: int = DEFAULT_BATCH,
        idle_s: float = DEFAULT_IDLE_S,
        retention_s: float = DEFAULT_RETENTION_S,
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.log = log_
        self.pool = database.pool
        self.role = role
        self.publisher = log_.fenced_publisher(role)
        self.metrics = metrics or WorkerMetrics()
        self.batch_size = batch_size
        self.idle_s = idle_s
        self.retention_s = retention_s
        self.wakeup = wakeup or asyncio.Event()
        self.published = 0
        self.last_beat = time.monotonic()
        self._lease: PoolConnectionProxy[asyncpg.Record] | None = None  # holds the advisory lock while this relay leads

    async def publish_once(self) -> int:
        """Publish up to one batch; the number published, or -1 when another relay holds the lease."""
        refused: LogUnavailable | None = None  # the log's answer wins over a lease connection that died meanwhile
        try:
            conn = await self._leading()
            if conn is None:
                return -1
            async with conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL"
                    " ORDER BY id LIMIT $1 FOR UPDATE",
                    self.batch_size,
                )
                if not rows:
                    return 0
                try:
                    await self.publisher.publish_many([_record(row) for row in rows])
                except LogUnavailable as exc:  # Fenced included: whoever leads next claims the role afresh
                    refused = exc
                else:
                    await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                                       [row["id"] for row in rows])
        except DATABASE_ERRORS as exc:
            await self.close()
            if refused is not None:
                raise refused from exc
            raise DatabaseUnavailable(f"relay cannot read the outbox: {exc}") from exc
        if refused is not None:
            await self.close()
            raise refused
        for topic, count in Counter(row["topic"] for row in rows).items():
            self.metrics.relay_published.labels(topic=topic).inc(count)
        self.published += len(rows)
        return len(rows)

    async def _leading(self) -> PoolConnectionProxy[asyncpg.Record] | None:
        """The lease's connection while this relay leads; takes the lease and claims the role if it is free."""
        if self._lease is not None:
            return self._lease
        conn = await self.pool.acquire()
        locked = False
        try:
            locked = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_ID))
        finally:
            if not locked:  # another relay leads, or the query failed
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self.pool.release(conn)
        if not locked:
            return None
        self._lease = conn
        try:
            await self.publisher.claim()  # from here on, the previous leader's writes are refused
        except BaseException:
            await self.close()
            raise
        log.info("relay took the lease and claimed role %s on the log", self.role)
        return conn

    async def close(self) -> None:
        """Give up the lease (another relay takes over) and the publisher's resources. Safe to call twice."""
        conn, self._lease = self._lease, None
        await self.publisher.close()
        if conn is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_ID)
            with contextlib.suppress(*DATABASE_ERRORS):
                await self.pool.release(conn)

    async def pending(self) -> int:
        """Rows not yet published."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))

    async def cleanup(self) -> int:
        """Delete rows published longer ago than the retention; returns how many."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", self.retention_s
            )
        return int(status.split()[-1])

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, then drain what is committed so a clean shutdown leaves nothing behind."""
        try:
            await self._publish_until(stop)
        finally:
            await self.close()

    async def _publish_until(self, stop: asyncio.Event) -> None:
        failures = 0
        next_cleanup = time.monotonic() + _CLEANUP_INTERVAL_S
        while True:
            self.last_beat = time.monotonic()
            stopping = stop.is_set()
            self.wakeup.clear()  # before looking: a signal set during the look is not lost
            try:
                count = await self.publish_once()
                failures = 0
            except (DatabaseUnavailable, LogUnavailable) as exc:
                failures += 1
                delay = max(0.1, backoff_delay(failures, 0.5, 10.0))
                log.warning("relay failed (%s), retrying in %.1fs", exc, delay)
                if stopping:
                    return
                await self._sleep(stop, delay)
                continue
            if count == self.batch_size:
                continue  # more is waiting
            if stopping:
                return
            if time.monotonic() >= next_cleanup:
                next_cleanup = time.monotonic() + _CLEANUP_INTERVAL_S
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self.cleanup()
                    self.metrics.outbox_pending.set(await self.pending())
            await self._sleep(stop, self.idle_s if count >= 0 else max(self.idle_s, 1.0))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _record(row: asyncpg.Record) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
    headers = [(name, str(value).encode()) for name, value in _headers(row["headers"]).items()]
    return row["topic"], row["key"], row["value"], headers


def _headers(raw: object) -> dict[str, object]:
    if isinstance(raw, str | bytes):
        decoded = orjson.loads(raw)
        return decoded if isinstance(decoded, dict) else {}
    return dict(raw) if isinstance(raw, dict) else {}


async def run_relay(
    settings: Settings,
    log_: EventLog,
    db: Database,
    stop_event: asyncio.Event,
    *,
    metrics: WorkerMetrics | None = None,
    wakeup: asyncio.Event | None = None,
) -> None:
    """Run the outbox relay until `stop_event` is set (library entry point for `processor run`)."""
    await OutboxRelay(log_, db, role=relay_role(settings), metrics=metrics, wakeup=wakeup).run(stop_event)
