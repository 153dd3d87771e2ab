"""The reconciler `processor run` runs periodically: a reconcile pass (processor.operations.reconcile) every
interval, one replica at a time, starting once the consumer has caught up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.operations.reconcile import DEFAULT_AGE, ReconcileReport, reconcile
from processor.operations.status import read_status
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

#: an arbitrary constant: the advisory lock that keeps periodic reconcilers of several replicas from overlapping
RECONCILE_LOCK_ID = 0x5A4D_0007
#: how often the periodic reconciler looks whether the consumer has caught up before its first pass
CATCH_UP_POLL_S = 1.0
#: the cursor name of the pass `processor run` makes periodically (the CLI's is "cli")
PERIODIC_CURSOR = "periodic"


async def run_reconciler(
    settings: Settings,
    db: Database,
    stripe_api: StripeApi,
    interval_s: float,
    stop_event: asyncio.Event,
    *,
    age: timedelta = DEFAULT_AGE,
    event_log: EventLog | None = None,
    metrics: WorkerMetrics | None = None,
) -> None:
    """Reconcile every `interval_s` until `stop_event` is set (for `processor run`); one replica at a time.

    With `event_log`, the first pass waits until the consumer has caught up (no lag, no unpublished outbox
    row): right after a crash, what the log still holds is the consumer's to apply, not a repair. Every pass
    then holds each batch of repairs back until the consumer has applied what the log held when the batch was
    fetched (a backlog that built up later is the consumer's too), and discovers only sandboxes whose events are
    older than `age` (processor.operations.reconcile). Each repair
    counts in `metrics` (processor_reconcile_repairs_total) besides its warning and history row.

    A pass under way when `stop_event` is set is cancelled rather than finished (a pass over many sandboxes at
    Stripe's rate limit takes minutes, longer than a shutdown may): its cursor, saved after every batch, lets
    the next pass continue where it stopped, and a batch cut short is applied wholly or not at all.
    """
    if event_log is not None and not await _caught_up(settings, event_log, db, stop_event):
        return
    on_repair = None if metrics is None else (lambda r: metrics.reconcile_repairs.labels(kind=r.kind).inc())
    while not stop_event.is_set():
        try:
            async with db.pool.acquire() as conn:
                # session lock on a held connection: another replica's reconciler skips this round
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RECONCILE_LOCK_ID):
                    try:
                        work = reconcile(
                            settings, db, stripe_api, age=age, cursor=PERIODIC_CURSOR, on_repair=on_repair,
                            event_log=event_log,
                        )
                        await _until_stopped(work, stop_event)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1)", RECONCILE_LOCK_ID)
        except Exception:  # a failed round must not end the task; the next round tries again
            log.exception("periodic reconcile failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), interval_s)


async def _caught_up(settings: Settings, event_log: EventLog, db: Database, stop_event: asyncio.Event) -> bool:
    """Wait until the consumer has applied and the relay published everything received so far; False if
    `stop_event` came first."""
    log.info("periodic reconcile waits for the consumer to catch up before its first pass")
    while not stop_event.is_set():
        try:
            status = await read_status(settings, event_log, db)
        except Exception as exc:  # the log or database not there yet: the next look may find them
            log.debug("periodic reconcile: status not readable yet: %s", exc)
        else:
            if status.caught_up:
                log.info("consumer caught up; periodic reconcile starts")
                return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), CATCH_UP_POLL_S)
    return False


async def _until_stopped(work: Coroutine[Any, Any, ReconcileReport], stop_event: asyncio.Event) -> None:
    """Await `work`, cancelling it as soon as `stop_event` is set; its own failure is raised."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()  # a no-op once it finished
        await asyncio.gather(task, stopped, return_exceptions=True)
    if task.cancelled():
        log.info("periodic reconcile stopped mid-pass; the next pass resumes from its cursor")
        return
    task.result()
