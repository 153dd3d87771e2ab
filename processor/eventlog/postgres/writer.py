"""Group commit for the PostgreSQL event log, bounded in memory and in time.

One writer task appends what concurrent callers publish in a single transaction, so many small durable writes
cost one fsync. What it holds is bounded in records and in bytes: a publish beyond either bound fails at once
with LogUnavailable (the ingress answers 503 and Stripe retries: nothing is lost), rather than piling bodies
up behind a stalled write. Every write is bounded in time on the server (lock_timeout and statement_timeout,
so a timed-out write rolls back and none of it is in the log) and on the client (for a server that stops
answering). The writer reports itself unhealthy while a write has been pending too long or the last one
failed, and healthy again once a write (or, when idle, a probe) succeeds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from processor import constants as c
from processor.db.pool import Connection
from processor.errors import LogUnavailable
from processor.eventlog.base import Headers, Published, TopicPartition
from processor.eventlog.kafka.partitioner import partition_for

#: most records and bytes one group-commit transaction writes (one caller's records are never split, however
#: many): after a stall, the backlog is committed in steps that each answer their callers soon, rather than
#: in one big transaction that outlasts the callers' patience
_MAX_BATCH = 2000
_MAX_BATCH_BYTES = 4 * 1024 * 1024
#: the client-side deadline of a write exceeds the server-side timeouts by this much, so that a blocked
#: write normally ends by the server's clean rollback, and the client deadline only catches a silent server
_CLIENT_GRACE_S = 1.0
#: after a failed write with nothing to write, the writer probes the log this often to turn healthy again
_PROBE_INTERVAL_S = 1.0

_RECORD_COLUMNS = (
    "topic", "partition", "offset", "key", "value", "header_keys", "header_values", "timestamp_ms",
)

#: the number of partitions of a topic (creating the topic on first use)
PartitionCount = Callable[[Connection, str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class WriterLimits:
    """How much the writer may hold and for how long a write may take."""

    max_queued_records: int = c.DEFAULT_LOG_QUEUE_RECORDS
    max_queued_bytes: int = c.DEFAULT_LOG_QUEUE_BYTES
    write_timeout_s: float = c.DEFAULT_PUBLISH_TIMEOUT_S
    stalled_after_s: float = c.DEFAULT_LOG_STALLED_AFTER_S


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to append."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int

    def size(self) -> int:
        """Bytes this record holds in memory while queued (bodies and headers dominate)."""
        return len(self.value) + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)


@dataclass(slots=True)
class _Unit:
    """One caller's records: written in one transaction and answered together, so a caller that is told its
    call failed knows that none of it is in the log, and retrying cannot reorder what it published."""

    records: Sequence[Outgoing]
    size: int
    future: asyncio.Future[list[Published]] = field(repr=False)
    taken: bool = False  # by the writer, for the write in flight
    abandoned: bool = False  # its caller gave up while it was queued: it holds nothing any more


class LogWriter:
    """The single writer of a PostgreSQL event log. `start()`/`stop()` are safe to call twice."""

    def __init__(self, pool: asyncpg.Pool, partition_count: PartitionCount, limits: WriterLimits) -> None:
        self._pool = pool
        self._partition_count = partition_count
        self.limits = limits
        self._units: collections.deque[_Unit] = collections.deque()
        self._queued_records = 0
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is queued or being written
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._write_started: float | None = None  # monotonic start of the write in flight
        self._failing = False  # the last write (or probe) failed
        self._round_robin = itertools.count()

    async def start(self) -> None:
        if self._task is None:
            self._failing = False
            self._accepting = True
            self._task = asyncio.create_task(self._run(), name="pg-log-writer")

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Refuse new records, finish queued writes (for up to `drain_timeout_s`), then stop the writer.
        Callers whose records were not written by then are told so (LogUnavailable)."""
        task, self._task = self._task, None
        self._accepting = False
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._drained.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._fail(list(self._units), LogUnavailable("the PostgreSQL event log stopped before the write"))
        self._units.clear()
        self._queued_records = self._queued_bytes = 0

    def healthy(self) -> bool:
        """False while the log cannot write: the last write failed, or the one in flight is stalled."""
        if self._task is None or self._task.done() or self._failing:
            return False
        started = self._write_started
        return started is None or time.monotonic() - started < self.limits.stalled_after_s

    async def submit(self, records: Sequence[Outgoing]) -> list[Published]:
        """Append `records` in one transaction; return once committed. Raises LogUnavailable at once when the
        writer holds as much as it may, and when the write fails or times out (then none of it was written,
        save for a client-side timeout racing the commit: at least once, never out of order)."""
        unit = _Unit(records, sum(r.size() for r in records), asyncio.get_running_loop().create_future())
        self._admit(unit)
        return await unit.future

    def _admit(self, unit: _Unit) -> None:
        if not self._accepting or self._task is None or self._task.done():
            raise LogUnavailable("the PostgreSQL event log is not started (or its writer ended)")
        # an empty writer takes any one call, however big, so that no call can be refused forever
        if self._queued_records and (
                self._queued_records + len(unit.records) > self.limits.max_queued_records
                or self._queued_bytes + unit.size > self.limits.max_queued_bytes):
            raise LogUnavailable(
                f"the PostgreSQL event log is behind: {self._queued_records} records"
                f" ({self._queued_bytes} bytes) are waiting to be written")
        self._queued_records += len(unit.records)
        self._queued_bytes += unit.size
        self._units.append(unit)
        unit.future.add_done_callback(lambda _: self._abandon(unit))
        self._drained.clear()
        self._wakeup.set()

    def _abandon(self, unit: _Unit) -> None:
        """A caller that gave up (the ingress answered 503) frees its share of the bounds and its bodies at
        once, so a stalled log keeps room for callers that still wait rather than for ones nobody waits for."""
        if unit.taken or unit.abandoned or not unit.future.cancelled():
            return
        unit.abandoned = True
        self._queued_records -= len(unit.records)
        self._queued_bytes -= unit.size
        unit.records = ()

    async def _run(self) -> None:
        while True:
            if not self._units:
                self._drained.set()
                self._wakeup.clear()
                if not self._failing:
                    await self._wakeup.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_PROBE_INTERVAL_S):
                        await self._wakeup.wait()
                if not self._units:
                    await self._probe()
                    continue
            await self._write_batch(self._take_batch())

    def _take_batch(self) -> list[_Unit]:
        batch: list[_Unit] = []
        count = size = 0
        while self._units and (not batch or (count + len(self._units[0].records) <= _MAX_BATCH
                                             and size + self._units[0].size <= _MAX_BATCH_BYTES)):
            unit = self._units.popleft()
            if not unit.abandoned:
                unit.taken = True
                batch.append(unit)
                count += len(unit.records)
                size += unit.size
        return batch

    async def _write_batch(self, batch: list[_Unit]) -> None:
        live = [unit for unit in batch if not unit.future.done()]  # nobody waits for the others
        try:
            if not live:
                return
            self._write_started = time.monotonic()
            try:
                results = await self._write([record for unit in live for record in unit.records])
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, LogUnavailable) as exc:
                self._failing = True
                self._fail(live, exc if isinstance(exc, LogUnavailable) else LogUnavailable(
                    f"event log write failed: {type(exc).__name__}: {exc}"))
                return
            self._failing = False
            start = 0
            for unit in live:
                end = start + len(unit.records)
                if not unit.future.done():
                    unit.future.set_result(results[start:end])
                start = end
        finally:
            # a write interrupted (the writer stopped mid-write) leaves no caller waiting for ever
            self._fail(live, LogUnavailable("the PostgreSQL event log stopped during the write"))
            self._write_started = None
            self._queued_records -= sum(len(unit.records) for unit in batch)
            self._queued_bytes -= sum(unit.size for unit in batch)

    @staticmethod
    def _fail(units: list[_Unit], error: LogUnavailable) -> None:
        for unit in units:
            if not unit.future.done():
                unit.future.set_exception(error)

    async def _session(self, conn: Connection) -> None:
        """Bound every statement and lock wait of this transaction, so a held lock turns into a clean
        rollback instead of an unbounded wait (SET LOCAL: the pooled connection keeps its defaults)."""
        timeout_ms = str(max(1, int(self.limits.write_timeout_s * 1000)))
        await conn.execute("SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true)",
                           timeout_ms)

    async def _probe(self) -> None:
        """Check that the log can take a write now, by taking the locks an append takes, and nothing else."""
        try:
            async with asyncio.timeout(self.limits.write_timeout_s + _CLIENT_GRACE_S):
                async with self._pool.acquire() as conn, conn.transaction():
                    await self._session(conn)
                    await conn.execute("LOCK TABLE log_partitions, log_records IN ROW EXCLUSIVE MODE")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return
        self._failing = False

    async def append_in(self, conn: Connection, records: Sequence[Outgoing]) -> list[Published]:
        """Append `records` in the caller's open transaction `conn`, its statements bounded like the writer's own
        (the fenced writes of processor.eventlog.postgres.fence, which must check their fence in the same
        transaction)."""
        await self._session(conn)
        return await self._append(conn, list(records))

    async def _write(self, batch: list[Outgoing]) -> list[Published]:
        async with asyncio.timeout(self.limits.write_timeout_s + _CLIENT_GRACE_S):
            async with self._pool.acquire() as conn, conn.transaction():
                await self._session(conn)
                return await self._append(conn, batch)

    async def _append(self, conn: Connection, batch: list[Outgoing]) -> list[Published]:
        groups: dict[TopicPartition, list[int]] = collections.defaultdict(list)
        for index, record in enumerate(batch):
            count = await self._partition_count(conn, record.topic)
            if record.key is None:
                partition = next(self._round_robin) % count
            else:
                partition = partition_for(record.key, count)
            groups[TopicPartition(record.topic, partition)].append(index)
        results: list[Published | None] = [None] * len(batch)
        rows = []
        # lock partition rows in one global order so concurrent writers never deadlock
        for tp in sorted(groups):
            indexes = groups[tp]
            first = await conn.fetchval(
                "UPDATE log_partitions SET next_offset = next_offset + $3"
                " WHERE topic = $1 AND partition = $2 RETURNING next_offset - $3",
                tp.topic, tp.partition, len(indexes),
            )
            if first is None:
                raise LogUnavailable(f"topic {tp.topic!r} has no partition {tp.partition}")
            for offset, index in enumerate(indexes, start=first):
                r = batch[index]
                rows.append((tp.topic, tp.partition, offset, r.key, r.value, [h[0] for h in r.headers],
                             [h[1] for h in r.headers], r.timestamp_ms))
                results[index] = Published(tp.topic, tp.partition, offset)
        await conn.copy_records_to_table("log_records", records=rows, columns=_RECORD_COLUMNS)
        return [r for r in results if r is not None]
