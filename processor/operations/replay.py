"""Re-feed events into stripe.events for the consumer to process again; its idempotency makes this safe.

Sources: the DLQ (optionally filtered), a time window or explicit offsets of the input topic, every stored
event of one sandbox, or Stripe's Events APIs (deliveries Stripe never got through: v2 events and the v1
account events we handle). Events already applied
(in `processed_events`) are skipped and counted. Every re-published record carries `replay.run-id` and
`replay.of` (what it copies); a run is resumable: a re-run with the same run id first reads the input topic
from where the run began and skips whatever the run already re-published, so an interrupted run finishes
without duplicates even when it died between a publish and its bookkeeping. A DLQ record is marked replayed
(hidden from `dlq list`) only after its copy is durable.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from processor import constants as c
from processor.db.pool import Database
from processor.errors import ProcessorError
from processor.eventlog.base import EventLog, Headers, Record, TopicPartition
from processor.ingress.envelope import EnvelopeError, parse_envelope
from processor.lifecycle.messages import rfc3339
from processor.operations import dlq as dlq_ops
from processor.operations.progress import NoProgress, Progress
from processor.operations.stripe_events import v1_account_events, v2_events
from processor.operations.timespec import parse_moment
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

#: headers a copy does not inherit: the DLQ's error headers and an earlier replay's own
#: (values: replay.run-id = the run id; replay.of = `dlq:P:O`, `events:P:O` or `stripe:<event id>`)
_NOT_COPIED = c.DLQ_ERROR_HEADERS | {c.H_REPLAY_RUN, c.H_REPLAY_OF}
#: Stripe keeps events for 30 days
STRIPE_RETENTION = timedelta(days=30)
#: the fields of a v2 event that make its thin notification (what a webhook delivers)
_NOTIFICATION_FIELDS = ("id", "object", "type", "created", "livemode", "context", "reason", "related_object")
#: a dry run lists at most this many records
MAX_LISTED = 10_000
Source = Literal["dlq", "window", "offsets", "sandbox", "stripe"]
SOURCES: tuple[Source, ...] = ("dlq", "window", "offsets", "sandbox", "stripe")
#: first key of the two-key advisory locks that serialise runs with the same id (an arbitrary constant)
LOCK_SPACE = 0x5A4D


class ReplayInProgress(ProcessorError):
    """Another process is running the replay run with this id right now."""

    code = "replay_in_progress"


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets `start <= o < end` of one partition of the input topic; `end=None` up to the run's start."""

    partition: int
    start: int
    end: int | None = None


def parse_offsets(text: str) -> tuple[OffsetRange, ...]:
    """`0:100-200,1:5-` (partition:start-end, end exclusive and optional); ValueError otherwise."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, sep, span = part.partition(":")
        start, dash, end = span.partition("-")
        if not sep or not dash or not partition.isdigit() or not start.isdigit() or not (end == "" or end.isdigit()):
            raise ValueError(f"{part!r} is not partition:start-end (e.g. 0:100-200 or 0:100-)")
        ranges.append(OffsetRange(int(partition), int(start), int(end) if end else None))
    if not ranges:
        raise ValueError("no offsets given")
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay. Times are what operators type (`3d`, an RFC 3339 time); they are fixed when a run starts."""

    source: Source
    dlq: dlq_ops.DlqFilter = field(default_factory=dlq_ops.DlqFilter)
    since: str | None = None
    until: str | None = None
    offsets: tuple[OffsetRange, ...] = ()
    sandbox_id: str | None = None

    def validate(self) -> None:
        """ValueError naming what is missing or contradictory."""
        if self.source in ("window", "stripe") and self.since is None:
            raise ValueError(f"a {self.source} replay needs --since")
        if self.source == "offsets" and not self.offsets:
            raise ValueError("an offsets replay needs --offsets")
        if self.source == "sandbox" and not self.sandbox_id:
            raise ValueError("a sandbox replay needs the sandbox id")
        for text in (self.since, self.until):
            if text is not None:
                parse_moment(text)

    def spec(self) -> dict[str, Any]:
        """The request as typed: what identifies a run (the same spec resumes the same unfinished run)."""
        return {
            "source": self.source,
            "dlq": {
                "error_class": self.dlq.error_class,
                "event_type": self.dlq.event_type,
                "sandbox_id": self.dlq.sandbox_id,
                # only when chosen, so the run ids of filter-only requests stay what they were
                **({"coordinates": sorted(self.dlq.coordinates)} if self.dlq.coordinates else {}),
            }
            if self.source == "dlq"
            else None,
            "since": self.since,
            "until": self.until,
            "offsets": [[r.partition, r.start, r.end] for r in self.offsets],
            "sandbox_id": self.sandbox_id,
        }

    def default_run_id(self) -> str:
        digest = hashlib.sha256(orjson.dumps(self.spec(), option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"replay-{self.source}-{digest[:12]}"


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (or, dry, would do)."""

    run_id: str
    source: str
    dry_run: bool
    resumed: bool = False
    read: int = 0
    replayed: int = 0
    skipped_processed: int = 0
    #: re-published earlier by this run (a resumed run), or a second copy of an event this run already sent
    skipped_replayed: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "read": self.read,
            "replayed": self.replayed,
            "skipped_processed": self.skipped_processed,
            "skipped_replayed": self.skipped_replayed,
            "window": self.window,
            **({"would_replay": self.listed} if self.dry_run else {}),
        }


@dataclass(slots=True)
class _Candidate:
    identity: str
    event_id: str | None
    event_type: str | None
    key: bytes | None
    value: bytes
    headers: Headers
    entry: dlq_ops.DlqEntry | None = None


@dataclass(slots=True)
class _Run:
    since: datetime | None
    until: datetime | None
    #: end offsets of the input topic when the run began: the input is read up to there, never past (the
    #: run's own copies land after it), and the run's copies are looked for from there
    bound: dict[TopicPartition, int]
    resumed: bool


def _copy(record: Record, identity: str, run_id: str) -> _Candidate:
    headers = [(k, v) for k, v in record.headers if k not in _NOT_COPIED]
    headers += [(c.H_REPLAY_RUN, run_id.encode()), (c.H_REPLAY_OF, identity.encode())]
    event_id = event_type = None
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        event_id = body.get("id") if isinstance(body.get("id"), str) else None
        event_type = body.get("type") if isinstance(body.get("type"), str) else None
    return _Candidate(
        identity,
        event_id or record.header(c.H_EVENT_ID),
        event_type or record.header(c.H_EVENT_TYPE),
        record.key,
        record.value,
        tuple(headers),
    )


def notification(event: dict[str, Any]) -> bytes:
    """The thin event notification a webhook would have carried for a v2 event fetched from the API."""
    return orjson.dumps({name: event[name] for name in _NOTIFICATION_FIELDS if name in event})


def stripe_candidate(event: dict[str, Any], run_id: str) -> _Candidate:
    """An event from an Events API as the ingress would have published it (same key rule and headers): a v2
    event as its thin notification, a v1 event as the snapshot a webhook carries (the listed object itself)."""
    body = notification(event) if event.get("object") == "v2.core.event" else orjson.dumps(event)
    envelope = parse_envelope(body)
    identity = f"stripe:{envelope.id}"
    headers = (
        (c.H_EVENT_ID, envelope.id.encode()),
        (c.H_EVENT_TYPE, envelope.type.encode()),
        (c.H_OBJECT, envelope.object.encode()),
        (c.H_RECEIVED_AT, rfc3339(datetime.now(UTC)).encode()),
        # fetched over the authenticated API, verified by no webhook secret: no stripe.secret-index header;
        # `replay.of` says where the record came from (schemas/asyncapi.yaml)
        (c.H_REPLAY_RUN, run_id.encode()),
        (c.H_REPLAY_OF, identity.encode()),
    )
    return _Candidate(identity, envelope.id, envelope.type, envelope.key.encode(), body, headers)


async def replay(
    settings: Settings,
    log_: EventLog,
    db: Database,
    request: ReplayRequest,
    *,
    stripe: StripeApi | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
    progress: Progress | None = None,
    batch_size: int = 500,
) -> ReplayReport:
    """Replay what `request` names into the input topic; see the module docstring for the guarantees."""
    request.validate()
    if request.source == "stripe" and stripe is None:
        raise ValueError("a replay from Stripe needs a Stripe client")
    run_id = run_id or request.default_run_id()
    async with db.pool.acquire() as lock_conn:
        # one process per run id at a time (CLI and HTTP alike); the lock ends with the connection
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_SPACE, run_id):
            raise ReplayInProgress(f"replay run {run_id} is already running")
        try:
            return await _replay(
                settings, log_, db, request, stripe, dry_run, run_id, progress or NoProgress(), batch_size
            )
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_SPACE, run_id)


async def _replay(
    settings: Settings,
    log_: EventLog,
    db: Database,
    request: ReplayRequest,
    stripe: StripeApi | None,
    dry_run: bool,
    run_id: str,
    progress: Progress,
    batch_size: int,
) -> ReplayReport:
    topic = settings.topic(c.TOPIC_EVENTS)
    run = await _open_run(db, log_, topic, run_id, request, dry_run)
    report = ReplayReport(run_id, request.source, dry_run, resumed=run.resumed)
    if run.since is not None:
        report.window = {"since": rfc3339(run.since), "until": rfc3339(run.until or datetime.now(UTC))}
    identities, sent_events = await _replayed_by(log_, topic, run_id, run.bound) if run.resumed else (set(), set())
    try:
        # records to replay in source order (per partition in offset order), a batch at a time
        source = _source(settings, log_, db, request, run, run_id, stripe, progress)
        async for chunk in _chunks(source, batch_size):
            await _replay_chunk(log_, db, topic, run_id, chunk, identities, sent_events, report, dry_run)
            progress.advance(len(chunk))
            if not dry_run:  # the counts so far: any interface listing runs shows a running one's progress
                await _save_counts(db, run_id, report, finished=False)
    finally:
        progress.close()
    if not dry_run:
        await _save_counts(db, run_id, report, finished=True)
    log.info("replay %s: %s", run_id, report.as_dict())
    return report


async def _save_counts(db: Database, run_id: str, report: ReplayReport, *, finished: bool) -> None:
    counts = orjson.dumps({k: v for k, v in report.as_dict().items() if isinstance(v, int)}).decode()
    async with db.pool.acquire() as conn:
        await conn.execute(
            "UPDATE replay_runs SET counts = $2::jsonb, finished_at = CASE WHEN $3 THEN now() END WHERE run_id = $1",
            run_id,
            counts,
            finished,
        )


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """A replay run as any interface started it: its request, counts so far and whether it is running now."""

    run_id: str
    source: str
    params: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    #: a process holds the run's lock right now (unfinished and not running = interrupted, resumable)
    running: bool

    @property
    def status(self) -> str:
        return "finished" if self.finished_at else "running" if self.running else "interrupted"


async def list_replay_runs(db: Database, *, limit: int = 50, run_id: str | None = None) -> list[ReplayRun]:
    """The newest replay runs (or the one named `run_id`), running ones told apart by their advisory lock."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT r.run_id, r.source, r.params, r.started_at, r.finished_at, r.counts,"
            " EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = $1"
            "  AND l.objid = hashtext(r.run_id)::oid AND l.objsubid = 2 AND l.granted) AS running"
            " FROM replay_runs r WHERE ($3::text IS NULL OR r.run_id = $3)"
            " ORDER BY r.finished_at IS NOT NULL, r.started_at DESC LIMIT $2",
            LOCK_SPACE,
            limit,
            run_id,
        )
    return [
        ReplayRun(
            r["run_id"],
            r["source"],
            orjson.loads(r["params"]),
            r["started_at"],
            r["finished_at"],
            orjson.loads(r["counts"]) if r["counts"] else {},
            bool(r["running"]) and r["finished_at"] is None,
        )
        for r in rows
    ]


async def _replay_chunk(
    log_: EventLog,
    db: Database,
    topic: str,
    run_id: str,
    chunk: Sequence[_Candidate],
    identities: set[str],
    sent_events: set[str],
    report: ReplayReport,
    dry_run: bool,
) -> None:
    report.read += len(chunk)
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id FROM processed_events WHERE event_id = ANY($1::text[])",
            [c_.event_id for c_ in chunk if c_.event_id],
        )
    processed = {row["event_id"] for row in rows}
    send: list[_Candidate] = []
    done_before: list[dlq_ops.DlqEntry] = []
    applied: list[dlq_ops.DlqEntry] = []
    for candidate in chunk:
        if candidate.event_id in processed:
            report.skipped_processed += 1
            if candidate.entry is not None:
                applied.append(candidate.entry)
        elif candidate.identity in identities or (candidate.event_id and candidate.event_id in sent_events):
            report.skipped_replayed += 1
            if candidate.entry is not None:
                done_before.append(candidate.entry)
        else:
            send.append(candidate)
            identities.add(candidate.identity)
            if candidate.event_id:
                sent_events.add(candidate.event_id)
    if dry_run:
        room = MAX_LISTED - len(report.listed)
        report.listed.extend(
            {
                "of": s.identity,
                "event_id": s.event_id,
                "event_type": s.event_type,
                "key": None if s.key is None else s.key.decode(errors="replace"),
            }
            for s in send[: max(0, room)]
        )
        report.replayed += len(send)
        return
    if send:
        # returns once every copy is durable; only then is anything marked as replayed
        await log_.publish_many([(topic, s.key, s.value, s.headers) for s in send])
    report.replayed += len(send)
    await dlq_ops.mark_resolved(
        db, [s.entry for s in send if s.entry is not None] + done_before, dlq_ops.REPLAYED, run_id
    )
    await dlq_ops.mark_resolved(db, applied, dlq_ops.ALREADY_PROCESSED, run_id)


async def _open_run(
    db: Database, log_: EventLog, topic: str, run_id: str, request: ReplayRequest, dry_run: bool
) -> _Run:
    """Resume the unfinished run `run_id`, or start it afresh (fixing its window and input bound now)."""
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT params, start_offsets, finished_at FROM replay_runs WHERE run_id = $1", run_id
        )
    if row is not None and row["finished_at"] is None:
        params = orjson.loads(row["params"])
        bound = {TopicPartition(topic, int(p)): int(o) for p, o in orjson.loads(row["start_offsets"]).items()}
        return _Run(_moment(params.get("since")), _moment(params.get("until")), bound, resumed=True)
    now = datetime.now(UTC)
    since = parse_moment(request.since, now) if request.since else None
    until = parse_moment(request.until, now) if request.until else (now if since else None)
    if request.source == "stripe" and since is not None:
        if since < now - STRIPE_RETENTION:
            raise ValueError("Stripe keeps events for 30 days: --since must be within the last 30 days")
    if since is not None and until is not None and until < since:
        raise ValueError("--until is before --since")
    bound = await log_.end_offsets(topic)
    if not dry_run:
        params = {
            **request.spec(),
            "since": rfc3339(since) if since else None,
            "until": rfc3339(until) if until else None,
        }
        async with db.pool.acquire() as conn:
            # a finished run with the same id starts over: its earlier copies lie before the new bound
            await conn.execute(
                "INSERT INTO replay_runs (run_id, source, params, start_offsets) VALUES ($1, $2, $3::jsonb,"
                " $4::jsonb) ON CONFLICT (run_id) DO UPDATE SET params = excluded.params,"
                " start_offsets = excluded.start_offsets, started_at = now(), finished_at = NULL, counts = NULL",
                run_id,
                request.source,
                orjson.dumps(params).decode(),
                orjson.dumps({str(tp.partition): o for tp, o in bound.items()}).decode(),
            )
    return _Run(since, until, bound, resumed=False)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _replayed_by(
    log_: EventLog, topic: str, run_id: str, bound: dict[TopicPartition, int]
) -> tuple[set[str], set[str]]:
    """What run `run_id` already re-published: read from the log itself (the source of truth)."""
    identities: set[str] = set()
    events: set[str] = set()
    async for chunk in dlq_ops.read_partitions(log_, await log_.end_offsets(topic), starts=bound):
        for record in chunk:
            if record.header(c.H_REPLAY_RUN) == run_id:
                identities.add(record.header(c.H_REPLAY_OF) or "")
                if event_id := record.header(c.H_EVENT_ID):
                    events.add(event_id)
    return identities, events


async def _chunks(candidates: AsyncIterator[_Candidate], size: int) -> AsyncIterator[list[_Candidate]]:
    """`candidates` in lists of up to `size`, in their order."""
    pending: list[_Candidate] = []
    async for candidate in candidates:
        pending.append(candidate)
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending


async def _source(
    settings: Settings,
    log_: EventLog,
    db: Database,
    request: ReplayRequest,
    run: _Run,
    run_id: str,
    stripe: StripeApi | None,
    progress: Progress,
) -> AsyncIterator[_Candidate]:
    if request.source == "dlq":
        async for entries in dlq_ops.dlq_entries(settings, log_, db, request.dlq):
            for entry in entries:
                candidate = _copy(entry.record, f"dlq:{entry.coordinate}", run_id)
                candidate.entry = entry
                yield candidate
    elif request.source == "stripe":
        assert stripe is not None and run.since is not None
        until = run.until or datetime.now(UTC)
        # the v2 sandbox events, then the v1 account events: the consumer orders account events by `created`
        for events in (v2_events(stripe, run.since, until), v1_account_events(stripe, run.since, until)):
            async for event in events:
                try:
                    yield stripe_candidate(event, run_id)
                except EnvelopeError as exc:
                    log.warning("skipping event from Stripe that is not an event: %s", exc)
    else:
        async for record in _input_records(log_, db, request, run, progress):
            yield _copy(record, f"events:{record.partition}:{record.offset}", run_id)


async def _input_records(
    log_: EventLog, db: Database, request: ReplayRequest, run: _Run, progress: Progress
) -> AsyncIterator[Record]:
    """Records of the input topic the request selects, read up to the run's bound."""
    bound = run.bound
    if request.source == "offsets":
        ranges = {}
        for r in request.offsets:
            tp = next((tp for tp in bound if tp.partition == r.partition), None)
            if tp is None:
                raise ValueError(f"the input topic has no partition {r.partition}")
            ranges[(tp, r.start)] = min(bound[tp], r.end if r.end is not None else bound[tp])
        progress.total(sum(max(0, end - start) for (_, start), end in ranges.items()))
        for (tp, start), end in ranges.items():
            async for chunk in dlq_ops.read_partitions(log_, {tp: end}, {tp: start}):
                for record in chunk:
                    yield record
        return
    if request.source == "window":
        assert run.since is not None
        since_ms = int(run.since.timestamp() * 1000)
        until_ms = int((run.until or datetime.now(UTC)).timestamp() * 1000)
        starts = {tp: await first_offset_at(log_, tp, end, since_ms) for tp, end in bound.items()}
        progress.total(sum(bound[tp] - starts[tp] for tp in bound))
        for tp in sorted(bound):
            async for chunk in dlq_ops.read_partitions(log_, {tp: bound[tp]}, {tp: starts[tp]}):
                for record in chunk:
                    if record.timestamp_ms > until_ms:
                        break
                    if record.timestamp_ms >= since_ms:
                        yield record
                else:
                    continue
                break
        return
    # one sandbox: every record keyed by it or by one of its accounts, or naming it
    assert request.sandbox_id is not None
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT sandbox_account, owner_account FROM sandboxes WHERE id = $1", request.sandbox_id
        )
    keys = {request.sandbox_id.encode()}
    if row is not None:
        keys.update(a.encode() for a in (row["sandbox_account"], row["owner_account"]) if a)
    progress.total(sum(bound.values()))
    async for chunk in dlq_ops.read_partitions(log_, bound):
        for record in chunk:
            if record.key in keys or dlq_ops.sandbox_of(record) == request.sandbox_id:
                yield record


async def first_offset_at(log_: EventLog, tp: TopicPartition, end: int, timestamp_ms: int) -> int:
    """The first offset below `end` whose record is at or after `timestamp_ms` (binary search; `end` if none).

    Group-less: `offsets_for_time` needs a group member owning the partition. Log timestamps are producer
    times, close to monotonic per partition; the window filter still checks each record.
    """
    low, high = 0, end
    started = time.monotonic()
    while low < high:
        mid = (low + high) // 2
        records = await log_.read(tp, mid, mid + 1)
        if not records or records[0].timestamp_ms < timestamp_ms:
            low = mid + 1
        else:
            high = mid
    log.debug("offset of %s at %d: %d (%.2fs)", tp, timestamp_ms, low, time.monotonic() - started)
    return low
