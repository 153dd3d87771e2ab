"""Operator jobs that outlast an HTTP request: replays and DLQ purges run in the background of a serving process.

A replay or purge reads the whole log or DLQ; on a large log that takes minutes, longer than any client or
proxy waits for an answer. So the operator API and the console start a job and answer at once with its id;
the job's page shows its progress and, once it ends, its result or error. A process runs at most `limit` jobs
at once and refuses more (`JobsBusy`) rather than queueing them: each holds database connections and reads the
log next to live traffic. On shutdown running jobs are cancelled and marked `interrupted`; a replay is
resumable (running it again with the same run id continues it), a purge can simply be asked for again.

Jobs live in this process (the `replay_runs` table lists real replay runs of every process; see
`replay.list_replay_runs`). Finished jobs are kept for their result, the newest `keep` of them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from processor.db.pool import Database
from processor.errors import ProcessorError
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
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
#: failures that say what was wrong with the job's input or state: logged in one line, no traceback
_EXPECTED_FAILURES = (ProcessorError, ValueError, OverflowError, asyncpg.DataError)


class JobsBusy(ProcessorError):
    """This process already runs as many operator jobs as it may; try again when one has ended."""

    code = "jobs_busy"


class JobRunning(ProcessorError):
    """A job with this id (the same replay run) is running in this process now."""

    code = "replay_in_progress"


class ReconcileRunning(JobRunning):
    """A reconcile pass is running in this process now (a second would resume the same interrupted pass)."""

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


class OperatorJobs:
    """The operator jobs of one process, by id: at most `limit` running, the newest `keep` finished kept."""

    def __init__(self, settings: Settings, log_: EventLog, db: Database, stripe: StripeApi | None, *,
                 limit: int = MAX_RUNNING_JOBS, keep: int = KEEP_FINISHED) -> None:
        self._settings, self._log, self._db, self._stripe = settings, log_, db, stripe
        self._limit, self._keep = limit, keep
        self._jobs: dict[str, Job] = {}
        self._closed = False

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self, kind: str | None = None) -> list[Job]:
        """The jobs kept here (of `kind`), newest first."""
        found = [job for job in self._jobs.values() if kind is None or job.kind == kind]
        return sorted(found, key=lambda job: job.started_at, reverse=True)

    def start_replay(self, request: ReplayRequest, *, dry_run: bool = False, run_id: str | None = None,
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

        return self._start("replay", job_id, params, work, expected)

    def start_purge(self, where: dlq_ops.DlqFilter, coordinates: Sequence[str] = ()) -> Job:
        """Start `purge_dlq(where, coordinates)` now."""
        for text in coordinates:
            dlq_ops.parse_coordinate(text)  # a malformed coordinate is the operator's to fix, answered now
        params = {"error_class": where.error_class, "event_type": where.event_type,
                  "sandbox_id": where.sandbox_id, "coordinates": list(coordinates)}

        async def work(progress: JobProgress) -> dict[str, Any]:
            report = await dlq_ops.purge_dlq(self._settings, self._log, self._db, where, coordinates=coordinates,
                                             progress=progress)
            return {"purged": report.purged, "deleted_from_log": report.deleted}

        return self._start("dlq_purge", f"purge-{secrets.token_hex(6)}", params, work, None)

    def start_reconcile(self, *, age: timedelta, dry_run: bool, discover: bool, limit: int | None) -> Job:
        """Start a reconcile pass now (one at a time here: a second would resume the same interrupted pass)."""
        if self._stripe is None:
            raise ValueError("no Stripe client is configured")
        if any(job.running for job in self.jobs("reconcile")):
            raise ReconcileRunning("a reconcile pass is already running here; follow it at /v1/ops/jobs")
        stripe = self._stripe
        params = {"age_s": age.total_seconds(), "dry_run": dry_run, "discover": discover, "limit": limit}

        async def work(progress: JobProgress) -> dict[str, Any]:
            report = await reconcile(self._settings, self._db, stripe, age=age, dry_run=dry_run, discover=discover,
                                     limit=limit, cursor="http", progress=progress)
            return report.as_dict()

        return self._start("reconcile", f"reconcile-{secrets.token_hex(6)}", params, work, None)

    def _start(self, kind: str, job_id: str, params: dict[str, Any], work: Work, expected: int | None) -> Job:
        if self._closed:
            raise ShuttingDown("the process is shutting down; start the job on another replica or later")
        existing = self._jobs.get(job_id)
        if existing is not None and existing.running:
            raise JobRunning(f"replay run {job_id} is already running here; follow it at its page")
        running = sum(job.running for job in self._jobs.values())
        if running >= self._limit:
            raise JobsBusy(f"{running} operator jobs are running in this process (the limit); "
                           "try again when one has ended")
        job = Job(job_id, kind, params, JobProgress(expected))
        self._jobs.pop(job_id, None)  # a finished job of the same id gives way (and moves to the newest end)
        self._jobs[job_id] = job
        job.task = asyncio.create_task(self._run(job, work), name=f"operator job {job_id}")
        self._forget_old()
        return job

    async def _run(self, job: Job, work: Work) -> None:
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

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if not job.running]
        for job_id in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[job_id]

    async def stop(self) -> None:
        """Start no more jobs, cancel the running ones (they are marked interrupted) and wait for them to end."""
        self._closed = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
