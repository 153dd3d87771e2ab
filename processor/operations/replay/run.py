"""A replay run: one process per run id at a time, resumable, publishing each candidate once (see the package
docstring for the guarantees)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from processor import constants as c
from processor.db.pool import Database
from processor.errors import ProcessorError
from processor.eventlog.base import EventLog, Record, TopicPartition
from processor.lifecycle.messages import rfc3339
from processor.operations import dlq as dlq_ops
from processor.operations.progress import NoProgress, Progress
from processor.operations.replay.copies import Candidate, copy_record
from processor.operations.replay.request import STRIPE_RETENTION, ReplayReport, ReplayRequest
from processor.operations.replay.sent import SentSoFar
from processor.operations.replay.sources import dlq as dlq_source
from processor.operations.replay.sources import offsets as offsets_source
from processor.operations.replay.sources import sandbox as sandbox_source
from processor.operations.replay.sources import stripe as stripe_source
from processor.operations.replay.sources import window as window_source
from processor.operations.timespec import parse_moment
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

#: a dry run lists at most this many records
MAX_LISTED = 10_000
#: first key of the two-key advisory locks that serialise runs with the same id (an arbitrary constant)
LOCK_SPACE = 0x5A4D
#: replays one process runs at once: each holds a connection of its own for its lock and competes for the
#: pool and the log with live traffic; an operator who needs more runs them one after another
MAX_CONCURRENT_REPLAYS = 2
_running_replays = 0


class ReplayInProgress(ProcessorError):
    """Another process is running the replay run with this id right now."""

    code = "replay_in_progress"


class ReplaysBusy(ProcessorError):
    """This process already runs as many replays as it may; try again when one has ended."""

    code = "replays_busy"


@dataclass(slots=True)
class _Run:
    since: datetime | None
    until: datetime | None
    #: end offsets of the input topic when the run began: the input is read up to there, never past (the
    #: run's own copies land after it), and the run's copies are looked for from there
    bound: dict[TopicPartition, int]
    resumed: bool


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
    global _running_replays
    if _running_replays >= MAX_CONCURRENT_REPLAYS:
        raise ReplaysBusy(f"{_running_replays} replays are running in this process; try again when one has ended")
    _running_replays += 1
    try:
        # The run lock sits on a connection outside the pool: a pooled one held for the whole run while the run
        # waits for more from the same pool deadlocks once every pooled connection is a lock holder (seen:
        # replays started at once through the API stalled the whole process). The lock ends with the connection.
        lock_conn = await db.dedicated_connection()
        try:
            # one process per run id at a time (CLI and HTTP alike)
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_SPACE, run_id):
                raise ReplayInProgress(f"replay run {run_id} is already running")
            return await _replay(
                settings, log_, db, request, stripe, dry_run, run_id, progress or NoProgress(), batch_size
            )
        finally:
            await lock_conn.close()
    finally:
        _running_replays -= 1


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
    sent = SentSoFar(*await _replayed_by(log_, topic, run_id, run.bound)) if run.resumed else SentSoFar()
    try:
        # records to replay in source order (per partition in offset order), a batch at a time
        source = _source(settings, log_, db, request, run, run_id, stripe, progress)
        async for chunk in _chunks(source, batch_size):
            await _replay_chunk(log_, db, topic, run_id, chunk, sent, report, dry_run)
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


async def _replay_chunk(
    log_: EventLog,
    db: Database,
    topic: str,
    run_id: str,
    chunk: Sequence[Candidate],
    sent: SentSoFar,
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
    send, done_before, applied = _sort_out(chunk, processed, sent, report)
    if dry_run:
        _list(send, report)
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


def _sort_out(
    chunk: Sequence[Candidate],
    processed: set[str],
    sent: SentSoFar,
    report: ReplayReport,
) -> tuple[list[Candidate], list[dlq_ops.DlqEntry], list[dlq_ops.DlqEntry]]:
    """Split `chunk` into what to send, the DLQ entries this run re-published before, and the DLQ entries whose
    event is already applied; the skipped are counted, and what is sent is remembered as sent."""
    send: list[Candidate] = []
    done_before: list[dlq_ops.DlqEntry] = []
    applied: list[dlq_ops.DlqEntry] = []
    for candidate in chunk:
        if candidate.event_id in processed:
            report.skipped_processed += 1
            if candidate.entry is not None:
                applied.append(candidate.entry)
        elif sent.seen(candidate):
            report.skipped_replayed += 1
            if candidate.entry is not None:
                done_before.append(candidate.entry)
        else:
            send.append(candidate)
            sent.add(candidate)
    return send, done_before, applied


def _list(send: Sequence[Candidate], report: ReplayReport) -> None:
    """A dry run lists what it would send (up to MAX_LISTED records)."""
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


async def _chunks(candidates: AsyncIterator[Candidate], size: int) -> AsyncIterator[list[Candidate]]:
    """`candidates` in lists of up to `size`, in their order."""
    pending: list[Candidate] = []
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
) -> AsyncIterator[Candidate]:
    """The candidates of the request's source, in source order (per partition in offset order)."""
    if request.source == "dlq":
        async for candidate in dlq_source.candidates(settings, log_, db, request.dlq, run_id):
            yield candidate
        return
    if request.source == "stripe":
        assert stripe is not None and run.since is not None
        async for candidate in stripe_source.candidates(stripe, run.since, run.until or datetime.now(UTC), run_id):
            yield candidate
        return
    records: AsyncIterator[Record]
    if request.source == "offsets":
        records = offsets_source.records(log_, request.offsets, run.bound, progress)
    elif request.source == "window":
        assert run.since is not None
        records = window_source.records(log_, run.since, run.until or datetime.now(UTC), run.bound, progress)
    else:
        assert request.sandbox_id is not None
        records = sandbox_source.records(log_, db, request.sandbox_id, run.bound, progress)
    async for record in records:
        yield copy_record(record, f"events:{record.partition}:{record.offset}", run_id)
