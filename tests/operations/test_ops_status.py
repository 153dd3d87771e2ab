"""`processor status` and the workers' lag/outbox gauges tell whether everything received is applied and
published, on both log backends."""

from __future__ import annotations

import asyncio
import json

from processor import constants as c
from processor.consumer.loop import ConsumerOptions
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.runtime.metrics import WorkerMetrics
from processor.runtime.worker import WorkerOptions, run_worker
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import cli, create_sandboxes, emulator_stack, with_db, worker


async def _received(log: EventLog, settings: Settings) -> int:
    return sum((await log.end_offsets(settings.topic(c.TOPIC_EVENTS))).values())


async def _status_then_catch_up(base: Settings, log: EventLog, pg_dsn: str) -> None:
    async with emulator_stack(base, log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db:
            await create_sandboxes(api, 6, "status")
            await stack.emu.wait_for_deliveries(within_s=30)
            received = await _received(log, settings)
            assert received >= 6

            behind = await cli(settings, "status", "--json")
            assert behind.code == 1, behind.stderr
            report = json.loads(behind.stdout)
            assert (report["caught_up"], report["lag"]) == (False, received)
            assert sum(p["end"] for p in report["partitions"]) == received

            timed_out = await cli(settings, "status", "--wait-caught-up", "--timeout", "1")
            assert timed_out.code == 1
            assert f"not caught up after 1s: consumer lag {received}" in timed_out.stderr

            waiting = asyncio.create_task(cli(settings, "status", "--wait-caught-up", "--timeout", "90", "--json"))
            async with worker(settings, log, db):
                caught_up = await waiting
            assert caught_up.code == 0, caught_up.stderr
            report = json.loads(caught_up.stdout)
            assert (report["caught_up"], report["lag"], report["outbox_pending"]) == (True, 0, 0)
            assert all(p["committed"] == p["end"] for p in report["partitions"])

            text = await cli(settings, "status")
            assert text.code == 0 and "caught up" in text.stdout and "outbox rows not yet published: 0" in text.stdout


async def test_status_on_the_postgres_log(pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str) -> None:
    """On the PostgreSQL-table log `status` reports the backlog (exit 1), times out with a clear message, and
    `--wait-caught-up` returns 0 once a worker has applied and published everything."""
    await _status_then_catch_up(pg_settings, pg_log, pg_dsn)


async def test_status_on_kafka(kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str) -> None:
    """The same on Kafka, where the committed offsets are the lifecycle group's on the broker."""
    await _status_then_catch_up(kafka_settings, kafka_log, pg_dsn)


def _gauge(metrics: WorkerMetrics, name: str) -> float | None:
    """The sum of a gauge's samples; None before the first refresh set any."""
    samples = [line for line in metrics.exposition().decode().splitlines() if line.startswith(name)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples) if samples else None


async def test_worker_gauges_show_the_backlog_within_seconds(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """A relay-only worker's gauges show the group's backlog per partition within a few seconds, and a consuming
    worker's show it drained, with no outbox row left."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db:
            await create_sandboxes(api, 5, "gauges")
            await stack.emu.wait_for_deliveries(within_s=30)
            received = await _received(pg_log, settings)

            async def watch(options: WorkerOptions, want: float, outbox: float | None = None) -> float | None:
                metrics, stop = WorkerMetrics(), asyncio.Event()
                task = asyncio.create_task(run_worker(settings, pg_log, db, stop, options, metrics))
                try:
                    for _ in range(150):  # 30 s, generous on a loaded machine; the gauges refresh every 3 s
                        pending = _gauge(metrics, "processor_outbox_pending ")
                        if _gauge(metrics, "processor_consumer_group_lag{") == want and outbox in (None, pending):
                            return pending
                        await asyncio.sleep(0.2)
                    raise AssertionError(f"group lag gauge never showed {want}: {metrics.exposition().decode()}")
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 30)

            started = asyncio.get_running_loop().time()
            await watch(WorkerOptions(consume=False), received)
            assert asyncio.get_running_loop().time() - started < 10
            options = WorkerOptions(consumer=ConsumerOptions(batch_size=500, not_found_delay_s=0.05))
            # the relay publishes what the last batch wrote within a refresh or two of the lag reaching 0
            assert await watch(options, 0, outbox=0) == 0
