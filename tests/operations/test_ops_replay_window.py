"""Time-window replays: already-processed events change nothing; an interrupted run re-run has no duplicates."""

from __future__ import annotations

from collections import Counter

from processor import constants as c
from processor.constants import H_REPLAY_OF, H_REPLAY_RUN
from processor.db.pool import Database
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.replay import ReplayRequest, replay
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import (
    create_sandboxes,
    emulator_stack,
    publish_thin_events,
    read_topic,
    snapshot,
    wait_for,
    with_db,
    worker,
)


async def test_window_replay_of_processed_events_changes_nothing(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """A time-window replay over 1,000 processed events publishes nothing, reports all 1,000 as skipped, and
    leaves sandboxes, history, processed events and outbox exactly as they were."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        stack.emu.set_knobs(delivery_enabled=False)
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db:
            ids = await create_sandboxes(api, 50, "window")
            count = await publish_thin_events(pg_log, settings, ids, 20)
            assert count == 1000
            async with worker(settings, pg_log, db):

                async def all_processed() -> bool:
                    return (await snapshot(pg_dsn)).processed == count

                await wait_for(all_processed, 60, "1,000 events processed")
            before = await snapshot(pg_dsn)
            ends = await pg_log.end_offsets(settings.topic(c.TOPIC_EVENTS))
            report = await replay(settings, pg_log, db, ReplayRequest("window", since="1h"), batch_size=200)
            assert (report.read, report.replayed, report.skipped_processed) == (1000, 0, 1000)
            assert await pg_log.end_offsets(settings.topic(c.TOPIC_EVENTS)) == ends
            assert await snapshot(pg_dsn) == before


class Interrupt(Exception):
    """Stands in for Ctrl-C or a crash in the middle of a run."""


class InterruptAfter:
    """Progress that interrupts the run once `limit` records were handled."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.done = 0

    def total(self, count: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.done >= self.limit:
            raise Interrupt

    def close(self) -> None:
        pass


async def test_interrupted_replay_rerun_finishes_without_duplicates(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """A window replay interrupted after 300 of 1,000 unprocessed events, run again with the same options,
    resumes and publishes the other 700: each event is on the topic exactly once more."""
    settings = with_db(kafka_settings, pg_dsn)
    ids = [f"clmsbx_test_resume{i:04d}" for i in range(50)]
    count = await publish_thin_events(kafka_log, settings, ids, 20)
    request = ReplayRequest("window", since="1h")
    async with Database(settings) as db:
        try:
            await replay(settings, kafka_log, db, request, batch_size=100, progress=InterruptAfter(300))
        except Interrupt:
            pass
        else:
            raise AssertionError("the run was not interrupted")
        resumed = await replay(settings, kafka_log, db, request, batch_size=100)
    assert resumed.resumed and (resumed.read, resumed.replayed, resumed.skipped_replayed) == (count, 700, 300)
    copies = [r for r in await read_topic(kafka_log, settings.topic(c.TOPIC_EVENTS)) if r.header(H_REPLAY_RUN)]
    assert len(copies) == count
    assert Counter(r.header(c.H_EVENT_ID) for r in copies).most_common(1)[0][1] == 1
    assert len({r.header(H_REPLAY_OF) for r in copies}) == count
