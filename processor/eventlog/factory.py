"""Pick the event-log backend from the settings: Kafka when bootstrap servers are configured, else PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.kafka import outage as kafka_outage
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.eventlog.postgres.writer import WriterLimits
from processor.settings import Settings


@contextlib.asynccontextmanager
async def open_event_log(settings: Settings, database: Database | None = None) -> AsyncIterator[EventLog]:
    """A started event log; the embedded backend uses `database` (or opens its own, migrated)."""
    if not settings.embedded_log:
        kafka_outage.install(settings.kafka_bootstrap_servers)  # an outage logs two lines, not thousands
        kafka = KafkaEventLog(settings.kafka_bootstrap_servers, security=settings.kafka_security)
        async with kafka:
            yield kafka
        return
    async with contextlib.AsyncExitStack() as stack:
        if database is None:
            database = Database(settings)
            await database.start(upgrade=True)
            stack.push_async_callback(database.stop)
        # The writer gets connections of its own: the API, operator jobs and the consumer share the process's
        # pool, and a webhook must never wait behind them (seen: API replays holding every pooled connection
        # turned every delivery into a 503 for good). One task writes at a time; the second is for its probe.
        writer_pool = await database.separate_pool(max_size=2)
        stack.push_async_callback(writer_pool.close)
        # a write that outlasts the publish timeout is useless to the ingress, which has answered 503 by then
        pg_log = PostgresEventLog(database.pool, partitions=settings.embedded_partitions, writer_pool=writer_pool,
                                  limits=WriterLimits(write_timeout_s=settings.publish_timeout_s))
        async with pg_log:
            yield pg_log
