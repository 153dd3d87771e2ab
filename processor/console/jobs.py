"""Replays started from the console run in the background of the serving process; their pages show progress.

A replay of a large DLQ can take longer than a browser waits for an answer, so a confirmed replay starts a
task and the browser is sent to the run's page, which refreshes itself until the run ends and then shows its
report. Runs started elsewhere (the CLI, `/v1/ops/replay`, another console replica) are listed from the
`replay_runs` table, whose counts the replay updates after every batch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.operations.replay import ReplayReport, ReplayRequest, replay
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)


@dataclass(slots=True)
class JobProgress:
    """The replay's `Progress`: how many records it has read, of how many when it knows."""

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
    run_id: str
    progress: JobProgress
    task: asyncio.Task[ReplayReport | None] | None = None
    report: ReplayReport | None = None
    error: str | None = None
    started_by: str = field(default="", repr=False)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class ReplayJobs:
    """Replays this process runs for the console, by run id (the finished ones stay for their report)."""

    #: finished jobs kept for their pages; older ones are forgotten (the table still lists them)
    KEEP = 100

    def __init__(self, settings: Settings, log_: EventLog, db: Database, stripe: StripeApi | None) -> None:
        self._settings, self._log, self._db, self._stripe = settings, log_, db, stripe
        self._jobs: dict[str, Job] = {}

    def get(self, run_id: str) -> Job | None:
        return self._jobs.get(run_id)

    def start(self, request: ReplayRequest, *, expected: int | None) -> Job:
        """Start replaying `request` now; a run with the same id still running here is returned as it is."""
        run_id = request.default_run_id()
        existing = self._jobs.get(run_id)
        if existing is not None and existing.running:
            return existing
        job = Job(run_id, JobProgress(expected))
        job.task = asyncio.create_task(self._run(job, request), name=f"console replay {run_id}")
        self._jobs[run_id] = job
        self._forget_old()
        return job

    async def _run(self, job: Job, request: ReplayRequest) -> ReplayReport | None:
        try:
            job.report = await replay(
                self._settings, self._log, self._db, request, stripe=self._stripe, run_id=job.run_id,
                progress=job.progress,
            )
        except Exception as exc:  # the run's page shows why; the log has the traceback
            log.exception("console replay %s failed", job.run_id)
            job.error = f"{type(exc).__name__}: {exc}"
        return job.report

    def _forget_old(self) -> None:
        finished = [run_id for run_id, job in self._jobs.items() if not job.running]
        for run_id in finished[: max(0, len(finished) - self.KEEP)]:
            del self._jobs[run_id]

    async def stop(self) -> None:
        """Wait for the running replays (each is resumable; a stop in the middle loses nothing)."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
