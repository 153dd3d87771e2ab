"""The dead-letter topic as operators see it: list, show, purge, and the bookkeeping that hides resolved records.

A Kafka topic cannot delete single records, so a record an operator replayed or purged stays on the topic
and a row in `dlq_replays` marks it resolved; `list` hides resolved records unless asked. On the embedded
PostgreSQL log a purge also deletes the records themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from processor import constants as c
from processor.db.pool import Database
from processor.eventlog.base import EventLog, Record, TopicPartition
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.progress import Progress
from processor.paging import InvalidCursor, Page, decode_cursor, page_of, parse_limit
from processor.settings import Settings

#: records read from the log per request
READ_CHUNK = 1000
#: dead-lettered records per page of `dlq list` and GET /v1/ops/dlq unless asked otherwise
DEFAULT_PAGE = 100
REPLAYED = "replayed"
PURGED = "purged"
#: the event was applied by another delivery meanwhile: nothing left to replay
ALREADY_PROCESSED = "already_processed"


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead-lettered records an operation is about; None matches anything."""

    error_class: str | None = None
    event_type: str | None = None
    sandbox_id: str | None = None
    #: `partition:offset` of the records wanted (an operator's selection); empty = any record
    coordinates: frozenset[str] = frozenset()

    def matches(self, entry: DlqEntry) -> bool:
        return (
            (self.error_class is None or entry.error_class == self.error_class)
            and (self.event_type is None or entry.event_type == self.event_type)
            and (self.sandbox_id is None or entry.sandbox_id == self.sandbox_id)
            and (not self.coordinates or entry.coordinate in self.coordinates)
        )


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """One dead-lettered record with its error headers read out, and whether an operator resolved it."""

    record: Record
    event_id: str | None
    event_type: str | None
    sandbox_id: str | None
    error_class: str | None
    error_message: str | None
    failed_at: str | None
    attempts: int | None
    resolution: str | None

    @property
    def coordinate(self) -> str:
        """How operators name the record: `partition:offset`."""
        return f"{self.record.partition}:{self.record.offset}"

    def summary(self) -> dict[str, Any]:
        """The JSON an operator lists (no body)."""
        return {
            "coordinate": self.coordinate,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "sandbox_id": self.sandbox_id,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "failed_at": self.failed_at,
            "attempts": self.attempts,
            "original": {
                "topic": self.record.header(c.H_ORIGINAL_TOPIC),
                "partition": self.record.header(c.H_ORIGINAL_PARTITION),
                "offset": self.record.header(c.H_ORIGINAL_OFFSET),
            },
            "resolution": self.resolution,
        }

    def detail(self) -> dict[str, Any]:
        """Everything about the record, body included (it is a Stripe event: ids, no secrets)."""
        try:
            body: Any = orjson.loads(self.record.value)
        except orjson.JSONDecodeError:
            body = self.record.value.decode(errors="replace")
        return {
            **self.summary(),
            "key": None if self.record.key is None else self.record.key.decode(errors="replace"),
            "headers": {name: value.decode(errors="replace") for name, value in self.record.headers},
            "timestamp_ms": self.record.timestamp_ms,
            "body": body,
        }


def _body(record: Record) -> dict[str, Any]:
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def sandbox_of(record: Record, body: dict[str, Any] | None = None) -> str | None:
    """The claimable sandbox a record is about: its `related_object` when it names one, else the record key."""
    body = _body(record) if body is None else body
    related = body.get("related_object")
    if isinstance(related, dict) and str(related.get("type", "")).endswith("claimable_sandbox"):
        related_id = related.get("id")
        if isinstance(related_id, str) and related_id:
            return related_id
    return None if record.key is None else record.key.decode(errors="replace")


def entry_of(record: Record, resolution: str | None) -> DlqEntry:
    body = _body(record)
    attempts = record.header(c.H_ATTEMPTS)
    event_id = body.get("id") if isinstance(body.get("id"), str) else record.header(c.H_EVENT_ID)
    event_type = body.get("type") if isinstance(body.get("type"), str) else record.header(c.H_EVENT_TYPE)
    return DlqEntry(
        record=record,
        event_id=event_id,
        event_type=event_type,
        sandbox_id=sandbox_of(record, body),
        error_class=record.header(c.H_ERROR_CLASS),
        error_message=record.header(c.H_ERROR_MESSAGE),
        failed_at=record.header(c.H_FAILED_AT),
        attempts=int(attempts) if attempts and attempts.isdigit() else None,
        resolution=resolution,
    )


async def resolutions(db: Database, topic: str) -> dict[tuple[int, int], str]:
    """(partition, offset) -> resolution of every resolved record of `topic`."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch('SELECT partition, "offset", resolution FROM dlq_replays WHERE topic = $1', topic)
    return {(r["partition"], r["offset"]): r["resolution"] for r in rows}


async def read_partitions(
    log: EventLog, ends: dict[TopicPartition, int], starts: dict[TopicPartition, int] | None = None
) -> AsyncIterator[list[Record]]:
    """The records of each partition from `starts` (default 0) up to `ends`, in chunks, partition by partition."""
    for tp in sorted(ends):
        position = (starts or {}).get(tp, 0)
        while position < ends[tp]:
            chunk = await log.read(tp, position, min(position + READ_CHUNK, ends[tp]))
            if not chunk:
                # a gap: records purged from the PostgreSQL log, or removed by Kafka's retention
                position += READ_CHUNK
                continue
            yield chunk
            position = chunk[-1].offset + 1


async def dlq_entries(
    settings: Settings,
    log: EventLog,
    db: Database,
    where: DlqFilter | None = None,
    *,
    include_resolved: bool = False,
    after: tuple[int, int] | None = None,
) -> AsyncIterator[list[DlqEntry]]:
    """Dead-lettered records matching `where` in log order (partition, then offset), in chunks, starting after
    the record at (partition, offset) `after`; resolved ones only with `include_resolved`."""
    topic = settings.topic(c.TOPIC_DLQ)
    where = where or DlqFilter()
    resolved = await resolutions(db, topic)
    ends = await log.end_offsets(topic)
    starts: dict[TopicPartition, int] = {}
    if after is not None:
        ends = {tp: end for tp, end in ends.items() if tp.partition >= after[0]}
        starts = {tp: after[1] + 1 for tp in ends if tp.partition == after[0]}
    async for chunk in read_partitions(log, ends, starts):
        entries = [entry_of(r, resolved.get((r.partition, r.offset))) for r in chunk]
        selected = [e for e in entries if where.matches(e) and (include_resolved or e.resolution is None)]
        if selected:
            yield selected


async def list_dlq(
    settings: Settings,
    log: EventLog,
    db: Database,
    where: DlqFilter | None = None,
    *,
    include_resolved: bool = False,
    limit: int | None = None,
) -> list[DlqEntry]:
    """Up to `limit` dead-lettered records matching `where` (open ones unless `include_resolved`)."""
    found = await _first(dlq_entries(settings, log, db, where, include_resolved=include_resolved), limit)
    return found if limit is None else found[:limit]


async def page_dlq(
    settings: Settings,
    log: EventLog,
    db: Database,
    where: DlqFilter | None = None,
    *,
    include_resolved: bool = False,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> Page:
    """A page of dead-lettered records (their summaries) matching `where`, in log order."""
    parse_limit(limit, DEFAULT_PAGE)
    after = None
    if cursor:
        partition, offset = decode_cursor(cursor, 2)
        if not isinstance(partition, int) or not isinstance(offset, int) or min(partition, offset) < 0:
            raise InvalidCursor()
        after = (partition, offset)
    # one more than the page holds tells whether there is a next page
    found = await _first(dlq_entries(settings, log, db, where, include_resolved=include_resolved, after=after),
                         limit + 1)
    page, next_cursor = page_of(found, limit, lambda e: (e.record.partition, e.record.offset))
    return Page([e.summary() for e in page], next_cursor)


async def _first(chunks: AsyncIterator[list[DlqEntry]], count: int | None) -> list[DlqEntry]:
    """The entries of `chunks` until at least `count` are in (all of them for None): the log is read no further."""
    found: list[DlqEntry] = []
    async for chunk in chunks:
        found.extend(chunk)
        if count is not None and len(found) >= count:
            break
    return found


def parse_coordinate(text: str) -> tuple[int, int]:
    """`partition:offset` -> (partition, offset); ValueError otherwise."""
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r} is not partition:offset (e.g. 0:17)")
    return int(partition), int(offset)


async def show_dlq(settings: Settings, log: EventLog, db: Database, coordinate: str) -> DlqEntry | None:
    """The dead-lettered record at `partition:offset`, None if there is none."""
    partition, offset = parse_coordinate(coordinate)
    topic = settings.topic(c.TOPIC_DLQ)
    records = await log.read(TopicPartition(topic, partition), offset, offset + 1)
    if not records:
        return None
    resolved = await resolutions(db, topic)
    return entry_of(records[0], resolved.get((partition, offset)))


async def mark_resolved(db: Database, entries: Iterable[DlqEntry], resolution: str, run_id: str | None) -> None:
    """Record that `entries` are resolved (never downgrades a record already marked)."""
    rows = [(e.record.topic, e.record.partition, e.record.offset, resolution, run_id, e.event_id) for e in entries]
    if not rows:
        return
    async with db.pool.acquire() as conn:
        await conn.executemany(
            'INSERT INTO dlq_replays (topic, partition, "offset", resolution, run_id, event_id)'
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            rows,
        )


@dataclass(frozen=True, slots=True)
class PurgeReport:
    purged: int
    #: True when the records were deleted from the log (PostgreSQL log); False when only marked (Kafka)
    deleted: bool


async def purge_dlq(
    settings: Settings,
    log: EventLog,
    db: Database,
    where: DlqFilter | None = None,
    *,
    coordinates: Sequence[str] = (),
    progress: Progress | None = None,
) -> PurgeReport:
    """Resolve the open records matching `where` (or exactly `coordinates`) without replaying them.

    On Kafka they are marked purged (Kafka cannot delete single records); on the PostgreSQL log they are
    also deleted. `progress` counts the open matching records looked at.
    """
    wanted = {parse_coordinate(text) for text in coordinates}
    targets: list[DlqEntry] = []
    async for chunk in dlq_entries(settings, log, db, where):
        targets.extend(e for e in chunk if not wanted or (e.record.partition, e.record.offset) in wanted)
        if progress is not None:
            progress.advance(len(chunk))
    await mark_resolved(db, targets, PURGED, None)
    deleted = isinstance(log, PostgresEventLog)
    if deleted and targets:
        async with db.pool.acquire() as conn:
            await conn.execute(
                'DELETE FROM log_records r USING unnest($2::int[], $3::bigint[]) AS t(partition, "offset")'
                ' WHERE r.topic = $1 AND r.partition = t.partition AND r."offset" = t."offset"',
                settings.topic(c.TOPIC_DLQ),
                [e.record.partition for e in targets],
                [e.record.offset for e in targets],
            )
    return PurgeReport(len(targets), deleted)
