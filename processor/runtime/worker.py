"""The lifecycle worker process: consumer and (by default) relay in one event loop, plus /healthz and /metrics.

`serve_worker` opens what the worker needs from the settings (database, event log, Stripe client) and runs
until the stop event is set; the CLI sets it on SIGTERM/SIGINT, so the batch in hand is finished and committed
and the consumer leaves its group before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

from processor.consumer.loop import ConsumerOptions, LifecycleConsumer
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.factory import open_event_log
from processor.operations.status import refresh_gauges
from processor.outbox.relay import DEFAULT_BATCH, OutboxRelay, relay_role
from processor.runtime.health import HealthServer
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings
from processor.stripe_api.budget import shared_budget
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    consume: bool = True
    relay: bool = True
    #: port of /healthz and /metrics; None = no HTTP server
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    consumer: ConsumerOptions = field(default_factory=ConsumerOptions)
    relay_batch: int = DEFAULT_BATCH


@dataclass(slots=True)
class WorkerStatus:
    """What readiness needs to know of a worker: every part still running and the consumer reading the log."""

    consumer: LifecycleConsumer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def ready(self) -> bool:
        return (bool(self.tasks) and all(not task.done() for task in self.tasks)
                and (self.consumer is None or self.consumer.connected()))


def _say_why(task: asyncio.Task[None]) -> None:
    """Log what ended a part of the worker (the consumer and relay ride out outages of the log and database
    themselves, so an error here is one they cannot go on from)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s stopped and cannot go on: %s: %s", task.get_name(), type(error).__name__, error,
                  exc_info=error)


async def run_worker(
    settings: Settings,
    log_: EventLog,
    db: Database,
    stop: asyncio.Event,
    options: WorkerOptions | None = None,
    metrics: WorkerMetrics | None = None,
    status: WorkerStatus | None = None,
) -> None:
    """Consumer and/or relay on an open log and database until `stop` is set; `status` (if given) is kept up
    to date for a readiness check."""
    options = options or WorkerOptions()
    metrics = metrics or WorkerMetrics()
    status = status if status is not None else WorkerStatus()
    async with contextlib.AsyncExitStack() as stack:
        relay_stop = asyncio.Event()
        consumer, tasks = await _start_parts(settings, log_, db, options, metrics, stack, stop, relay_stop)
        status.consumer, status.tasks = consumer, tasks

        def alive() -> bool:
            return (consumer is None or consumer.alive()) and all(not t.done() for t in tasks)

        if options.health_port is not None:
            health = HealthServer(alive, lambda: log_.healthy() and status.ready(), metrics.exposition)
            await stack.enter_async_context(health.serving(options.health_host, options.health_port))
            log.info("worker health on http://%s:%d/healthz", options.health_host, health.port)
        gauges_stop = asyncio.Event()
        gauges = asyncio.create_task(refresh_gauges(settings, log_, db, metrics, gauges_stop), name="status-gauges")
        try:
            await _wait_for_stop(stop, tasks, tasks[:1] if options.consume else [])
        finally:
            relay_stop.set()
            stop.set()
            gauges_stop.set()
            results = await asyncio.gather(*tasks, gauges, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result


async def _start_parts(
    settings: Settings, log_: EventLog, db: Database, options: WorkerOptions, metrics: WorkerMetrics,
    stack: contextlib.AsyncExitStack, stop: asyncio.Event, relay_stop: asyncio.Event,
) -> tuple[LifecycleConsumer | None, list[asyncio.Task[None]]]:
    """Start the consumer (until `stop`) and the relay (until `relay_stop`) the options ask for, consumer first;
    the consumer wakes the relay when it committed outbox rows."""
    outbox_signal = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    consumer: LifecycleConsumer | None = None
    if options.consume:
        budget = shared_budget(settings, db.pool, metrics.budget)
        stripe = await stack.enter_async_context(
            StripeApi(settings, on_response=metrics.observe_stripe, budget=budget)
        )
        consumer = LifecycleConsumer(
            settings, log_, db, stripe, metrics=metrics, options=options.consumer, outbox_signal=outbox_signal
        )
        tasks.append(asyncio.create_task(consumer.run(stop), name="lifecycle-consumer"))
    if options.relay:
        relay = OutboxRelay(log_, db, role=relay_role(settings), metrics=metrics, wakeup=outbox_signal,
                            batch_size=options.relay_batch)
        tasks.append(asyncio.create_task(relay.run(relay_stop), name="outbox-relay"))
    for task in tasks:
        task.add_done_callback(_say_why)
    return consumer, tasks


async def _wait_for_stop(
    stop: asyncio.Event, tasks: list[asyncio.Task[None]], consumer_tasks: list[asyncio.Task[None]]
) -> None:
    """Until `stop` is set or a part ends; then until the consumer has finished its batch (the relay, still
    running, drains what that batch committed)."""
    stop_waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop_waiter.cancel()
    if consumer_tasks:
        await asyncio.gather(*consumer_tasks)


async def serve_worker(
    settings: Settings, options: WorkerOptions | None = None, stop: asyncio.Event | None = None
) -> None:
    """Open database, event log and Stripe client from `settings` and run the worker until SIGTERM/SIGINT."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    db = Database(settings)
    await db.start(upgrade=True)
    try:
        async with open_event_log(settings, db) as log_:
            await run_worker(settings, log_, db, stop, options)
    finally:
        await db.stop()
