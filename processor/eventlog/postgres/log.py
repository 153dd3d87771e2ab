"""The embedded event log: topics, partitions, offsets and consumer groups as PostgreSQL tables.

Producers append through one writer task (processor.eventlog.postgres.writer) that groups concurrent `publish`
calls into a single transaction, bounded in memory and in time. Consumers own partitions exclusively through
rows in `log_partition_owners`; a member that stops heartbeating loses them after the session timeout and
its uncommitted records are delivered again to whoever takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import asyncpg

from processor.db.pool import DATABASE_ERRORS, Connection
from processor.errors import CommitRejected, LogUnavailable
from processor.eventlog.base import Headers, Published, Record, TopicPartition
from processor.eventlog.postgres.fence import PostgresFencedPublisher
from processor.eventlog.postgres.writer import LogWriter, Outgoing, WriterLimits

log = logging.getLogger(__name__)

#: a member that has not heartbeated for this long is considered dead and loses its partitions
DEFAULT_SESSION_TIMEOUT_S = 10.0
#: members heartbeat and rebalance this often (from inside poll)
_HEARTBEAT_S = 1.0
#: an idle poll sleeps between fetches, backing off from the first to the second value
_IDLE_SLEEP_S = (0.005, 0.1)


class PostgresEventLog:
    """The event log backend for one machine. The pool belongs to the caller (processor.db.pool)."""

    name = "postgres"

    def __init__(self, pool: asyncpg.Pool, *, partitions: int = 4,
                 session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S, limits: WriterLimits | None = None,
                 writer_pool: asyncpg.Pool | None = None) -> None:
        """`writer_pool`: connections for the writer alone (processor.eventlog.factory gives it one), so
        appends never wait behind the pool's other users; without it the writer shares `pool`."""
        self.pool = pool
        self.default_partitions = partitions
        self.session_timeout_s = session_timeout_s
        self._partitions: dict[str, int] = {}
        self._writer = LogWriter(writer_pool or pool, self._partition_count, limits or WriterLimits())

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._writer.start()

    async def stop(self) -> None:
        """Finish queued writes, then stop the writer. Safe to call twice."""
        await self._writer.stop()

    async def __aenter__(self) -> PostgresEventLog:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def healthy(self) -> bool:
        """False while the log cannot write (a write failed or is stalled), so readiness turns red."""
        return self._writer.healthy()

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
        (published,) = await self._writer.submit([Outgoing(topic, key, value, headers, time.time_ns() // 1_000_000)])
        return published

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]) -> list[Published]:
        """All of `records` in one transaction: on failure none of them is in the log, so a retry by the
        caller cannot put a later record of a key before an earlier one."""
        now = time.time_ns() // 1_000_000
        return await self._writer.submit([Outgoing(topic, key, value, headers, now)
                                          for topic, key, value, headers in records])

    # --- reading ---------------------------------------------------------------------------------------
    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM log_records WHERE topic = $1 AND partition = $2"
                " AND \"offset\" >= $3 AND \"offset\" < $4 ORDER BY \"offset\"",
                tp.topic, tp.partition, start, end,
            )
        return [_to_record(row) for row in rows]

    async def append_in(self, conn: Connection, records: Sequence[Outgoing]) -> list[Published]:
        """Append `records` in the caller's open transaction `conn` (a fenced write), bounded like the writer's."""
        return await self._writer.append_in(conn, records)

    def fenced_publisher(self, role: str) -> PostgresFencedPublisher:
        """A writer for `role`, fenced by the role's generation in log_fences."""
        return PostgresFencedPublisher(self, role)

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


@contextlib.contextmanager
def _log_errors(what: str) -> Iterator[None]:
    """A consumer's database errors as LogUnavailable: the member can leave and join again, as on Kafka."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        # InternalClientError: a connection left mid-operation by a dropped session; the pool replaces it
        raise LogUnavailable(f"PostgreSQL event log {what} failed: {exc}") from exc


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
        with _log_errors("join"):
            async with self._log.pool.acquire() as conn:
                for topic in self.topics:
                    await self._log._partition_count(conn, topic)  # subscribing creates missing topics
            await self._heartbeat_and_rebalance()
        self._started = True

    async def stop(self) -> None:
        """Leave the group so the remaining members take over at once. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(*DATABASE_ERRORS):
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
            desired = await self._desired(conn)
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
            claimed = await self._claim(conn, sorted(desired - owned))
            now_owned = (owned - release) | claimed
            starts = await self._start_offsets(conn, claimed) if claimed else {}
        for tp in claimed:
            self._set_position(tp, starts[tp])
        for tp in self._owned - now_owned:
            self._positions.pop(tp, None)
            self._generations[tp] += 1  # a fetch in flight read it for the previous ownership
        # like a Kafka assignment, a partition that comes back starts unpaused
        self._paused -= (self._owned - now_owned) | claimed
        if claimed or release:
            log.info("member %s of %s owns %s", self.member_id, self.group, sorted(now_owned))
        self._owned = now_owned
        self._last_heartbeat = time.monotonic()

    async def _desired(self, conn: Connection) -> set[TopicPartition]:
        """The partitions this member should own: round-robin over the live members of each topic."""
        desired: set[TopicPartition] = set()
        for topic in self.topics:
            members = [r["member_id"] for r in await conn.fetch(
                "SELECT member_id FROM log_group_members WHERE group_id = $1 AND $2 = ANY(topics)"
                " ORDER BY member_id", self.group, topic)]
            partitions = [r["partition"] for r in await conn.fetch(
                "SELECT partition FROM log_partitions WHERE topic = $1 ORDER BY partition", topic)]
            desired.update(TopicPartition(topic, p) for p in partitions
                           if members[p % len(members)] == self.member_id)
        return desired

    async def _claim(self, conn: Connection, claim: Sequence[TopicPartition]) -> set[TopicPartition]:
        """Take the partitions of `claim` that no other member owns (one that still does releases it first)."""
        claimed: set[TopicPartition] = set()
        for tp in claim:
            got = await conn.fetchval(
                "INSERT INTO log_partition_owners (group_id, topic, partition, member_id)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING partition",
                self.group, tp.topic, tp.partition, self.member_id,
            )
            if got is not None:
                claimed.add(tp)
        return claimed

    async def _start_offsets(self, conn: Connection, claimed: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Where reading a newly owned partition starts: the group's commit, else its start or its end."""
        committed = {TopicPartition(r["topic"], r["partition"]): int(r["committed"]) for r in
                     await conn.fetch("SELECT topic, partition, committed FROM log_group_offsets"
                                      " WHERE group_id = $1", self.group)}
        ends = {}
        if not self.from_beginning:
            ends = {TopicPartition(r["topic"], r["partition"]): int(r["next_offset"]) for r in
                    await conn.fetch("SELECT topic, partition, next_offset FROM log_partitions")}
        return {tp: committed.get(tp, 0 if self.from_beginning else ends.get(tp, 0)) for tp in claimed}

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        if not self._started:
            raise RuntimeError("consumer not started")
        deadline = time.monotonic() + timeout_s
        sleep = _IDLE_SLEEP_S[0]
        while True:
            if time.monotonic() - self._last_heartbeat >= _HEARTBEAT_S:
                with _log_errors("heartbeat"):
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
        with _log_errors("read"):
            async with self._log.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT r.* FROM unnest($1::text[], $2::int[], $3::bigint[]) AS p(topic, partition, pos)"
                    " CROSS JOIN LATERAL (SELECT * FROM log_records r WHERE r.topic = p.topic"
                    " AND r.partition = p.partition AND r.\"offset\" >= p.pos ORDER BY r.\"offset\""
                    " LIMIT $4) r",
                    [tp.topic for tp in active], [tp.partition for tp in active],
                    [self._positions.get(tp, 0) for tp in active], per_partition,
                )
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
        with _log_errors("commit"):
            await self._commit(offsets)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
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
        with _log_errors("read of a commit"):
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
