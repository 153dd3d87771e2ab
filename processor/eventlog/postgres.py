"""The embedded event log: topics, partitions, offsets and consumer groups as PostgreSQL tables.

Producers append through one writer task that groups concurrent `publish` calls into a single transaction
(group commit), so many small durable writes cost one fsync. Consumers own partitions exclusively through
rows in `log_partition_owners`; a member that stops heartbeating loses them after the session timeout and
its uncommitted records are delivered again to whoever takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import asyncpg

from processor.database import Connection
from processor.errors import CommitRejected, LogUnavailable
from processor.eventlog.base import Headers, Published, Record, TopicPartition
from processor.eventlog.partitioner import partition_for

log = logging.getLogger(__name__)

#: most records one group-commit transaction writes
_MAX_BATCH = 2000
#: a member that has not heartbeated for this long is considered dead and loses its partitions
DEFAULT_SESSION_TIMEOUT_S = 10.0
#: members heartbeat and rebalance this often (from inside poll)
_HEARTBEAT_S = 1.0
#: an idle poll sleeps between fetches, backing off from the first to the second value
_IDLE_SLEEP_S = (0.005, 0.1)

_RECORD_COLUMNS = (
    "topic", "partition", "offset", "key", "value", "header_keys", "header_values", "timestamp_ms",
)


@dataclass(slots=True)
class _Pending:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int
    future: asyncio.Future[Published] = field(repr=False)


class PostgresEventLog:
    """The event log backend for one machine. The pool belongs to the caller (processor.database)."""

    name = "postgres"

    def __init__(self, pool: asyncpg.Pool, *, partitions: int = 4,
                 session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S) -> None:
        self.pool = pool
        self.default_partitions = partitions
        self.session_timeout_s = session_timeout_s
        self._partitions: dict[str, int] = {}
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._round_robin = itertools.count()
        self._healthy = False

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="pg-log-writer")
            self._healthy = True

    async def stop(self) -> None:
        """Finish queued writes, then stop the writer. Safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if not writer.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=10)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        self._healthy = False

    async def __aenter__(self) -> PostgresEventLog:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def healthy(self) -> bool:
        return self._healthy and self._writer is not None

    # --- topics ----------------------------------------------------------------------------------------
    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        count = partitions or self.default_partitions
        async with self.pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO log_partitions (topic, partition) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(topic, p) for topic in topics for p in range(count)],
            )
        self._partitions.clear()  # re-read counts: a topic may have existed with another count

    async def _partition_count(self, conn: Connection, topic: str) -> int:
        if topic not in self._partitions:
            count = await conn.fetchval("SELECT count(*) FROM log_partitions WHERE topic = $1", topic)
            if not count:
                # zero set-up: a topic is created on first use, like Kafka with auto-create on
                await conn.executemany(
                    "INSERT INTO log_partitions (topic, partition) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    [(topic, p) for p in range(self.default_partitions)],
                )
                count = await conn.fetchval("SELECT count(*) FROM log_partitions WHERE topic = $1", topic)
            self._partitions[topic] = int(count)
        return self._partitions[topic]

    async def partitions_for(self, topic: str) -> list[TopicPartition]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT partition FROM log_partitions WHERE topic = $1 ORDER BY partition", topic)
        return [TopicPartition(topic, row["partition"]) for row in rows]

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT partition, next_offset FROM log_partitions WHERE topic = $1", topic)
        return {TopicPartition(topic, r["partition"]): int(r["next_offset"]) for r in rows}

    async def group_offsets(self, group: str, topic: str) -> dict[TopicPartition, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT partition, committed FROM log_group_offsets WHERE group_id = $1 AND topic = $2", group, topic)
        return {TopicPartition(topic, r["partition"]): int(r["committed"]) for r in rows}

    # --- producing -------------------------------------------------------------------------------------
    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Published:
        if self._writer is None:
            raise LogUnavailable("the PostgreSQL event log is not started")
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(topic, key, value, headers, time.time_ns() // 1_000_000, future))
        return await future

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        if self._writer is None:
            raise LogUnavailable("the PostgreSQL event log is not started")
        loop = asyncio.get_running_loop()
        now = time.time_ns() // 1_000_000
        futures = []
        for topic, key, value, headers in records:
            future: asyncio.Future[Published] = loop.create_future()
            self._queue.put_nowait(_Pending(topic, key, value, headers, now, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a caller that gave up does not block others
        if live:
            try:
                results = await self._write(live)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LogUnavailable) as exc:
                self._healthy = False
                error = exc if isinstance(exc, LogUnavailable) else LogUnavailable(f"event log write failed: {exc}")
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                return
            self._healthy = True
            for pending, result in zip(live, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)

    async def _write(self, batch: list[_Pending]) -> list[Published]:
        async with self.pool.acquire() as conn, conn.transaction():
            groups: dict[TopicPartition, list[int]] = defaultdict(list)
            for index, pending in enumerate(batch):
                count = await self._partition_count(conn, pending.topic)
                if pending.key is None:
                    partition = next(self._round_robin) % count
                else:
                    partition = partition_for(pending.key, count)
                groups[TopicPartition(pending.topic, partition)].append(index)
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
                    p = batch[index]
                    rows.append((tp.topic, tp.partition, offset, p.key, p.value, [h[0] for h in p.headers],
                                 [h[1] for h in p.headers], p.timestamp_ms))
                    results[index] = Published(tp.topic, tp.partition, offset)
            await conn.copy_records_to_table("log_records", records=rows, columns=_RECORD_COLUMNS)
        return [r for r in results if r is not None]

    # --- reading ---------------------------------------------------------------------------------------
    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM log_records WHERE topic = $1 AND partition = $2"
                " AND \"offset\" >= $3 AND \"offset\" < $4 ORDER BY \"offset\"",
                tp.topic, tp.partition, start, end,
            )
        return [_to_record(row) for row in rows]

    def consumer(self, group: str, topics: Sequence[str], *, from_beginning: bool = True,
                 session_timeout_s: float | None = None) -> PostgresLogConsumer:
        return PostgresLogConsumer(self, group, topics, from_beginning=from_beginning,
                                   session_timeout_s=session_timeout_s or self.session_timeout_s)


def _to_record(row: asyncpg.Record) -> Record:
    return Record(
        topic=row["topic"], partition=row["partition"], offset=row["offset"], key=row["key"],
        value=row["value"], headers=tuple(zip(row["header_keys"], row["header_values"], strict=True)),
        timestamp_ms=row["timestamp_ms"],
    )


class PostgresLogConsumer:
    """One member of a consumer group on the PostgreSQL log."""

    def __init__(self, log_: PostgresEventLog, group: str, topics: Sequence[str], *, from_beginning: bool,
                 session_timeout_s: float) -> None:
        self._log = log_
        self.group = group
        self.topics = list(topics)
        self.from_beginning = from_beginning
        self.session_timeout_s = session_timeout_s
        self.member_id = f"{group}-{uuid.uuid4().hex[:12]}"
        self._owned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        #: bumped whenever a partition's position is set from outside a fetch (seek, a new owner): a fetch in
        #: flight meanwhile read from the old position, so its records of that partition are stale
        self._generations: dict[TopicPartition, int] = defaultdict(int)
        self._paused: set[TopicPartition] = set()
        self._last_heartbeat = 0.0
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        async with self._log.pool.acquire() as conn:
            for topic in self.topics:
                await self._log._partition_count(conn, topic)  # subscribing creates missing topics
        self._started = True
        await self._heartbeat_and_rebalance()

    async def stop(self) -> None:
        """Leave the group so the remaining members take over at once. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            async with self._log.pool.acquire() as conn:
                await conn.execute("DELETE FROM log_group_members WHERE group_id = $1 AND member_id = $2",
                                   self.group, self.member_id)
        self._owned.clear()
        self._positions.clear()

    async def __aenter__(self) -> PostgresLogConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._owned)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tp for tp in tps if tp in self._owned)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp in self._owned:  # a partition that moved on is read by its new owner from the last commit
            self._set_position(tp, offset)

    def _set_position(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset
        self._generations[tp] += 1

    async def _heartbeat_and_rebalance(self) -> None:
        """Heartbeat, expire dead members, and move towards a round-robin assignment over live members."""
        pool = self._log.pool
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO log_group_members (group_id, member_id, topics) VALUES ($1, $2, $3)"
                " ON CONFLICT (group_id, member_id) DO UPDATE SET heartbeat_at = now()",
                self.group, self.member_id, self.topics,
            )
            await conn.execute(
                "DELETE FROM log_group_members WHERE group_id = $1"
                " AND heartbeat_at < now() - make_interval(secs => $2)",
                self.group, self.session_timeout_s,
            )
            desired: set[TopicPartition] = set()
            for topic in self.topics:
                members = [r["member_id"] for r in await conn.fetch(
                    "SELECT member_id FROM log_group_members WHERE group_id = $1 AND $2 = ANY(topics)"
                    " ORDER BY member_id", self.group, topic)]
                partitions = [r["partition"] for r in await conn.fetch(
                    "SELECT partition FROM log_partitions WHERE topic = $1 ORDER BY partition", topic)]
                desired.update(TopicPartition(topic, p) for p in partitions
                               if members[p % len(members)] == self.member_id)
            owned = {TopicPartition(r["topic"], r["partition"]) for r in await conn.fetch(
                "SELECT topic, partition FROM log_partition_owners WHERE group_id = $1 AND member_id = $2",
                self.group, self.member_id)}
            release = owned - desired
            if release:
                await conn.execute(
                    "DELETE FROM log_partition_owners o USING unnest($3::text[], $4::int[]) AS r(topic, partition)"
                    " WHERE o.group_id = $1 AND o.member_id = $2 AND o.topic = r.topic"
                    " AND o.partition = r.partition",
                    self.group, self.member_id, [tp.topic for tp in release], [tp.partition for tp in release],
                )
            claim = sorted(desired - owned)
            claimed: set[TopicPartition] = set()
            for tp in claim:
                got = await conn.fetchval(
                    "INSERT INTO log_partition_owners (group_id, topic, partition, member_id)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING partition",
                    self.group, tp.topic, tp.partition, self.member_id,
                )
                if got is not None:
                    claimed.add(tp)
            now_owned = (owned - release) | claimed
            committed = {}
            if claimed:
                committed = {TopicPartition(r["topic"], r["partition"]): int(r["committed"]) for r in
                             await conn.fetch("SELECT topic, partition, committed FROM log_group_offsets"
                                              " WHERE group_id = $1", self.group)}
                ends = {}
                if not self.from_beginning:
                    ends = {TopicPartition(r["topic"], r["partition"]): int(r["next_offset"]) for r in
                            await conn.fetch("SELECT topic, partition, next_offset FROM log_partitions")}
        for tp in claimed:
            self._set_position(tp, committed.get(tp, 0 if self.from_beginning else ends.get(tp, 0)))
        for tp in self._owned - now_owned:
            self._positions.pop(tp, None)
            self._generations[tp] += 1  # a fetch in flight read it for the previous ownership
        # like a Kafka assignment, a partition that comes back starts unpaused
        self._paused -= (self._owned - now_owned) | claimed
        if claimed or release:
            log.info("member %s of %s owns %s", self.member_id, self.group, sorted(now_owned))
        self._owned = now_owned
        self._last_heartbeat = time.monotonic()

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        if not self._started:
            raise RuntimeError("consumer not started")
        deadline = time.monotonic() + timeout_s
        sleep = _IDLE_SLEEP_S[0]
        while True:
            if time.monotonic() - self._last_heartbeat >= _HEARTBEAT_S:
                await self._heartbeat_and_rebalance()
            records = await self._fetch(max_records)
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await asyncio.sleep(min(sleep, remaining))
            sleep = min(sleep * 2, _IDLE_SLEEP_S[1])

    async def _fetch(self, max_records: int) -> list[Record]:
        active = sorted(tp for tp in self._owned if tp not in self._paused)
        if not active:
            return []
        per_partition = max(1, max_records // len(active))
        generations = {tp: self._generations[tp] for tp in active}
        try:
            async with self._log.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT r.* FROM unnest($1::text[], $2::int[], $3::bigint[]) AS p(topic, partition, pos)"
                    " CROSS JOIN LATERAL (SELECT * FROM log_records r WHERE r.topic = p.topic"
                    " AND r.partition = p.partition AND r.\"offset\" >= p.pos ORDER BY r.\"offset\""
                    " LIMIT $4) r",
                    [tp.topic for tp in active], [tp.partition for tp in active],
                    [self._positions.get(tp, 0) for tp in active], per_partition,
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LogUnavailable(f"PostgreSQL event log read failed: {exc}") from exc
        # A seek (a rewind after a retriable error, from the task finishing the previous batch), a pause or a
        # lost partition while the query ran wins over what it read: those records are dropped unread, and the
        # position stays where the seek put it, as Kafka's fetcher drops records whose position moved.
        current = {tp for tp in active
                   if self._generations[tp] == generations[tp] and tp in self._owned and tp not in self._paused}
        records = [record for record in map(_to_record, rows) if record.tp in current]
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        for record in records:
            self._positions[record.tp] = record.offset + 1
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        async with self._log.pool.acquire() as conn, conn.transaction():
            owned = {TopicPartition(r["topic"], r["partition"]) for r in await conn.fetch(
                "SELECT topic, partition FROM log_partition_owners WHERE group_id = $1 AND member_id = $2"
                " FOR SHARE", self.group, self.member_id)}
            lost = set(offsets) - owned
            if lost:
                self._owned -= lost
                raise CommitRejected(f"{self.member_id} no longer owns {sorted(lost)}")
            await conn.executemany(
                "INSERT INTO log_group_offsets (group_id, topic, partition, committed) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (group_id, topic, partition) DO UPDATE SET committed = excluded.committed",
                [(self.group, tp.topic, tp.partition, offset) for tp, offset in offsets.items()],
            )

    async def committed(self, tp: TopicPartition) -> int | None:
        async with self._log.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT committed FROM log_group_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
                self.group, tp.topic, tp.partition)
        return None if value is None else int(value)

    async def offsets_for_time(self, timestamp_ms: int) -> dict[TopicPartition, int]:
        result = {}
        async with self._log.pool.acquire() as conn:
            for tp in sorted(self._owned):
                offset = await conn.fetchval(
                    "SELECT coalesce(min(\"offset\"), (SELECT next_offset FROM log_partitions"
                    " WHERE topic = $1 AND partition = $2)) FROM log_records"
                    " WHERE topic = $1 AND partition = $2 AND timestamp_ms >= $3",
                    tp.topic, tp.partition, timestamp_ms)
                result[tp] = int(offset)
        return result
