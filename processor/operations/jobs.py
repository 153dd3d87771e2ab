"""Operator jobs that outlast an HTTP request: replays, DLQ purges and reconcile passes run in the background of a
serving process.

A replay or purge reads the whole log or DLQ; on a large log that takes minutes, longer than any client or
proxy waits for an answer. So the operator API and the console start a job and answer at once with its id;
the job's page shows its progress and, once it ends, its result or error. A process runs at most `limit` jobs
at once and refuses more (`JobsBusy`) rather than queueing them: each holds database connections and reads the
log next to live traffic. On shutdown running jobs are cancelled and marked `interrupted`; a replay is
resumable (running it again with the same run id continues it), a purge can simply be asked for again.

Jobs are rows of `operator_jobs`, so any replica answers for a job another one runs (behind a load balancer the
poll of a job's page lands anywhere). The process that runs a job writes its progress and a heartbeat every
HEARTBEAT_S; a `running` row whose heartbeat is older than STALE_AFTER_S belongs to a process that ended without
saying so (killed, its machine lost), and is shown as interrupted. A running job's id (a replay run's, a reconcile
pass) is claimed in the table, so a second one is refused whichever replica is asked. The newest `keep` finished
jobs are kept for their result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from processor.db.pool import DATABASE_ERRORS, Database
from processor.errors import DatabaseUnavailable, ProcessorError
from processor.eventlog.base import EventLog
from processor.operations import dlq as dlq_ops
from processor.operations.reconcile import reconcile
from processor.operations.replay import ReplayRequest, replay
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

#: jobs one process runs at once: each reads the whole log or DLQ and holds database connections while live
#: traffic needs them too; an operator who needs more waits for one to end
MAX_RUNNING_JOBS = 2
#: finished jobs kept for their result (older ones are forgotten; the replay_runs table keeps real replays)
KEEP_FINISHED = 100
#: records a finished dry run keeps listed in its result (10,000 of them, as the CLI lists, in 100 jobs kept
#: would hold ~0.5 GB)
KEPT_LISTING = 200
#: seconds between writes of a running job's progress and heartbeat (what other replicas show of it)
HEARTBEAT_S = 2.0
#: a running job whose heartbeat is older than this many seconds has lost its process
STALE_AFTER_S = 30.0
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
#: failures that say what was wrong with the job's input or state: logged in one line, no traceback
_EXPECTED_FAILURES = (ProcessorError, ValueError, OverflowError, asyncpg.DataError)


class JobsBusy(ProcessorError):
    """This process already runs as many operator jobs as it may; try again when one has ended."""

    code = "jobs_busy"


class JobRunning(ProcessorError):
    """A job with this id (the same replay run) is running now, in this process or another."""

    code = "replay_in_progress"


class ReconcileRunning(JobRunning):
    """A reconcile pass is running now, in this process or another (a second would resume the same pass)."""

    code = "reconcile_in_progress"


class ShuttingDown(ProcessorError):
    """The process is stopping and starts no more jobs."""

    code = "shutting_down"
    retriable = True


@dataclass(slots=True)
class JobProgress:
    """A job's `Progress`: how many records it has read, of how many when it knows."""

    expected: int | None = None
    done: int = 0

    def total(self, count: int | None) -> None:
        self.expected = count

    def advance(self, count: int = 1) -> None:
        self.done += count

    def close(self) -> None:
        pass


@dataclass(slots=True)
class Job:
    """One operator job: what was asked, how far it got, and how it ended."""

    id: str
    kind: str
    params: dict[str, Any]
    progress: JobProgress
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = RUNNING
    result: dict[str, Any] | None = None
    #: `{"code": ..., "message": ...}` of a failed job
    error: dict[str, str] | None = None
    finished_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "params": self.params,
            "progress": {"done": self.progress.done, "expected": self.progress.expected},
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
        }


Work = Callable[[JobProgress], Awaitable[dict[str, Any]]]


#: a job's row, and whether it is running with its heartbeat stopped ($1: the seconds after which it is lost)
_SELECT = """
SELECT id, kind, params, status, done, expected, result, error, started_at, finished_at,
    status = 'running' AND heartbeat_at < now() - make_interval(secs => $1) AS lost
FROM operator_jobs"""

#: a new job's row, unless its id is a job still running: the claim that makes "one at a time" hold across
#: replicas (for reconcile passes, the unique index operator_jobs_one_reconcile refuses a second running row)
_CLAIM = """
INSERT INTO operator_jobs AS j (id, kind, params, status, expected, started_at, heartbeat_at)
VALUES ($2, $3, $4::jsonb, 'running', $5, $6, now())
ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, params = EXCLUDED.params, status = 'running', done = 0,
    expected = EXCLUDED.expected, result = NULL, error = NULL, started_at = EXCLUDED.started_at, finished_at = NULL,
    heartbeat_at = now()
WHERE j.status <> 'running' OR j.heartbeat_at < now() - make_interval(secs => $1)
RETURNING id
"""
#: the running rows of a kind whose process died, ended: they would hold the one-at-a-time index forever
_END_LOST = """
UPDATE operator_jobs SET status = 'interrupted', error = $3::jsonb, finished_at = now()
WHERE kind = $2 AND status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
"""
#: the error of a job whose process stopped writing its heartbeat
_PROCESS_LOST = {"code": "process_lost", "message": "the process running this job stopped without ending it"}


class OperatorJobs:
    """The operator jobs this process runs (at most `limit` at once), and every process's from `operator_jobs`."""

    def __init__(self, settings: Settings, log_: EventLog, db: Database, stripe: StripeApi | None, *,
                 limit: int = MAX_RUNNING_JOBS, keep: int = KEEP_FINISHED, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self._settings, self._log, self._db, self._stripe = settings, log_, db, stripe
        self._limit, self._keep = limit, keep
        self._heartbeat_s, self._stale_after_s = heartbeat_s, stale_after_s
        #: this process's jobs, running and recently ended: what it answers without asking the table
        self._jobs: dict[str, Job] = {}
        self._closed = False

    async def get(self, job_id: str) -> Job | None:
        """The job `job_id` of any process (None if there is none)."""
        if (job := self._jobs.get(job_id)) is not None:
            return job
        if "\x00" in job_id:  # PostgreSQL text cannot hold it, so no job's id has one (and asking would fail)
            return None
        rows = await self._fetch(_SELECT + " WHERE id = $2", self._stale_after_s, job_id)
        return _job_of(rows[0]) if rows else None

    async def jobs(self, kind: str | None = None) -> list[Job]:
        """The newest jobs of every process (of `kind`), newest first; this process's own as they are now."""
        newest = _SELECT + " WHERE $2::text IS NULL OR kind = $2 ORDER BY started_at DESC LIMIT $3"
        rows = await self._fetch(newest, self._stale_after_s, kind, self._keep)
        return [self._jobs.get(row["id"]) or _job_of(row) for row in rows]

    async def start_replay(self, request: ReplayRequest, *, dry_run: bool = False, run_id: str | None = None,
                           expected: int | None = None) -> Job:
        """Start `replay(request)` now; a dry run gets an id of its own (it is no run of the table)."""
        request.validate()  # what the operator must fix is answered now, not found later in the job
        if request.source == "stripe" and self._stripe is None:
            raise ValueError("a replay from Stripe needs a Stripe client, and none is configured")
        real_id = run_id or request.default_run_id()
        job_id = f"dry-{real_id}-{secrets.token_hex(4)}" if dry_run else real_id
        params = {**request.spec(), "dry_run": dry_run, "run_id": real_id}

        async def work(progress: JobProgress) -> dict[str, Any]:
            report = await replay(self._settings, self._log, self._db, request, stripe=self._stripe,
                                  dry_run=dry_run, run_id=real_id, progress=progress)
            del report.listed[KEPT_LISTING:]  # kept for the job's page, KEEP_FINISHED times over; counts cover all
            return report.as_dict()

        return await self._start(Job(job_id, "replay", params, JobProgress(expected)), work)

    async def start_purge(self, where: dlq_ops.DlqFilter, coordinates: Sequence[str] = ()) -> Job:
        """Start `purge_dlq(where, coordinates)` now."""
        for text in coordinates:
            dlq_ops.parse_coordinate(text)  # a malformed coordinate is the operator's to fix, answered now
        params = {"error_class": where.error_class, "event_type": where.event_type,
                  "sandbox_id": where.sandbox_id, "coordinates": list(coordinates)}

        async def work(progress: JobProgress) -> dict[str, Any]:
            report = await dlq_ops.purge_dlq(self._settings, self._log, self._db, where, coordinates=coordinates,
                                             progress=progress)
            return {"purged": report.purged, "deleted_from_log": report.deleted}

        return await self._start(Job(f"purge-{secrets.token_hex(6)}", "dlq_purge", params, JobProgress()), work)

    async def start_reconcile(self, *, age: timedelta, dry_run: bool, discover: bool, limit: int | None) -> Job:
        """Start a reconcile pass now; one at a time over all processes (a second would resume the same pass)."""
        if self._stripe is None:
            raise ValueError("no Stripe client is configured")
        stripe = self._stripe
        params = {"age_s": age.total_seconds(), "dry_run": dry_run, "discover": discover, "limit": limit}

        async def work(progress: JobProgress) -> dict[str, Any]:
            report = await reconcile(self._settings, self._db, stripe, age=age, dry_run=dry_run, discover=discover,
                                     limit=limit, cursor="http", progress=progress)
            return report.as_dict()

        job = Job(f"reconcile-{secrets.token_hex(6)}", "reconcile", params, JobProgress())
        return await self._start(job, work, one_of_kind=True)

    async def _start(self, job: Job, work: Work, *, one_of_kind: bool = False) -> Job:
        if self._closed:
            raise ShuttingDown("the process is shutting down; start the job on another replica or later")
        existing = self._jobs.get(job.id)
        if existing is not None and existing.running:  # here: said without asking the table
            raise JobRunning(f"replay run {job.id} is already running here; follow it at its page")
        running = sum(other.running for other in self._jobs.values())
        if running >= self._limit:
            raise JobsBusy(f"{running} operator jobs are running in this process (the limit); "
                           "try again when one has ended")
        claimed = await self._claim(job, one_of_kind)
        if not claimed and one_of_kind:
            raise ReconcileRunning("a reconcile pass is already running; follow it at /v1/ops/jobs")
        if not claimed:
            raise JobRunning(f"replay run {job.id} is already running; follow it at its page")
        self._jobs.pop(job.id, None)  # an ended job of the same id gives way (and moves to the newest end)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"operator job {job.id}")
        await self._forget_old()
        return job

    async def _claim(self, job: Job, one_of_kind: bool) -> bool:
        """Write `job`'s running row; False if a job of its id, or (`one_of_kind`) of its kind, runs anywhere."""
        try:
            async with self._db.pool.acquire() as conn:
                if one_of_kind:
                    await conn.execute(_END_LOST, self._stale_after_s, job.kind, _json(_PROCESS_LOST))
                return bool(await conn.fetch(_CLAIM, self._stale_after_s, job.id, job.kind, _json(job.params),
                                             job.progress.expected, job.started_at))
        except asyncpg.UniqueViolationError:  # operator_jobs_one_reconcile: another pass runs
            return False
        except DATABASE_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot write operator jobs: {exc}") from exc

    async def _run(self, job: Job, work: Work) -> None:
        heartbeat = asyncio.create_task(self._beat(job), name=f"operator job {job.id} heartbeat")
        try:
            job.result = await work(job.progress)
            job.status = FINISHED
        except asyncio.CancelledError:
            job.status = INTERRUPTED  # a replay resumes when run again; a purge can be asked for again
            raise
        except _EXPECTED_FAILURES as exc:
            log.warning("operator job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            job.status, job.error = FAILED, {"code": getattr(exc, "code", "bad_request"), "message": str(exc)}
        except Exception as exc:  # the job's page says that it failed; the log has the traceback
            log.exception("operator job %s failed", job.id)
            job.status, job.error = FAILED, {"code": "internal_error", "message": type(exc).__name__}
        finally:
            job.finished_at = datetime.now(UTC)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat  # its last write is done (or undone) before the one that ends the job
            await self._save(job)

    async def _beat(self, job: Job) -> None:
        """Write the running job's progress every heartbeat_s: other replicas show it, and see it is alive."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self._save(job)

    async def _save(self, job: Job) -> None:
        """Write how `job` stands now, onto its running row only: a write that comes late changes no ended job.
        A database that does not answer costs only the other replicas' view of it (the next heartbeat puts it
        right; a lost last write leaves them reading the job as interrupted once its heartbeat is old): the job
        itself goes on, or has ended, either way, and this process answers for it as it is."""
        try:
            async with self._db.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE operator_jobs SET status = $2, done = $3, expected = $4, result = $5::jsonb,"
                    " error = $6::jsonb, finished_at = $7, heartbeat_at = now() WHERE id = $1 AND status = 'running'",
                    job.id, job.status, job.progress.done, job.progress.expected,
                    None if job.result is None else _json(job.result),
                    None if job.error is None else _json(job.error), job.finished_at)
        except DATABASE_ERRORS as exc:
            log.warning("operator job %s: progress not saved: %s: %s", job.id, type(exc).__name__, exc)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """The rows of `sql`; DatabaseUnavailable if the table cannot be read or written."""
        try:
            async with self._db.pool.acquire() as conn:
                return list(await conn.fetch(sql, *args))
        except DATABASE_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot read operator jobs: {exc}") from exc

    async def _forget_old(self) -> None:
        """Keep the newest `keep` ended jobs, here and in the table (housekeeping: the job has started either way,
        and the next start deletes what this one could not)."""
        ended = [job_id for job_id, job in self._jobs.items() if not job.running]
        for job_id in ended[: max(0, len(ended) - self._keep)]:
            del self._jobs[job_id]
        try:
            async with self._db.pool.acquire() as conn:
                await conn.execute(
                    "DELETE FROM operator_jobs WHERE id IN (SELECT id FROM operator_jobs WHERE status <> 'running'"
                    " ORDER BY started_at DESC OFFSET $1)", self._keep)
        except DATABASE_ERRORS as exc:
            log.warning("old operator jobs not deleted: %s: %s", type(exc).__name__, exc)

    async def stop(self) -> None:
        """Start no more jobs, cancel the running ones (they are marked interrupted) and wait for them to end."""
        self._closed = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def _job_of(row: asyncpg.Record) -> Job:
    """A job of the table (another process's, or one this process no longer holds)."""
    status, error = row["status"], None if row["error"] is None else orjson.loads(row["error"])
    if row["lost"]:
        status = INTERRUPTED
        error = dict(_PROCESS_LOST)
    return Job(row["id"], row["kind"], orjson.loads(row["params"]), JobProgress(row["expected"], row["done"]),
               row["started_at"], status, None if row["result"] is None else orjson.loads(row["result"]), error,
               row["finished_at"])
