"""Webhooks the emulator never delivered (delivery off) are recovered by `reconcile` and by `replay --from-stripe`."""

from __future__ import annotations

from datetime import timedelta

from processor.db.pool import Database
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.reconcile import reconcile
from processor.operations.replay import ReplayRequest, replay
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import (
    check_paths,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    published,
    settled,
    wait_for,
    with_db,
    worker,
)


async def test_reconcile_recovers_dropped_webhooks(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """With delivery off after creation, reconcile drives every known sandbox to Stripe's state and registers
    the ones created while delivery was off, publishing complete gap-free paths; a second pass changes nothing."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db:
            async with worker(settings, pg_log, db):
                known = await create_sandboxes(api, 14, "known")
                await stack.emu.wait_for_deliveries(within_s=30)
                await wait_for(lambda: settled(pg_dsn, dict.fromkeys(known, "unclaimed")), 30, "registration")
                stack.emu.set_knobs(delivery_enabled=False)
                unseen = await create_sandboxes(api, 3, "unseen")
                drive(stack.emu, known + unseen)
                expected = expected_states(stack.emu, known + unseen)
                dry = await reconcile(settings, db, api, age=timedelta(0), dry_run=True)
                assert dry.discovered == sorted(unseen)
                report = await reconcile(settings, db, api, age=timedelta(0))
                assert sorted(report.discovered) == sorted(unseen)
                assert sum(report.repaired.values()) == sum(1 for sid in known + unseen if expected[sid] != "unclaimed")
                await wait_for(lambda: settled(pg_dsn, expected), 30, "every sandbox in Stripe's state")
                second = await reconcile(settings, db, api, age=timedelta(0))
                assert (second.transitions, second.discovered) == (0, [])
        pub = await published(pg_log, settings)
        check_paths(pub, expected)
        assert pub.raw_transition_count == len(pub.transitions)


async def test_replay_from_stripe_recovers_dropped_webhooks(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """With delivery off, `replay --from-stripe --since 1h` re-publishes the events Stripe lists and the
    consumer drives every sandbox to Stripe's state; a second run replays nothing new."""
    async with emulator_stack(kafka_settings, kafka_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        stack.emu.set_knobs(delivery_enabled=False)
        async with StripeApi(settings) as api, Database(settings) as db:
            ids = await create_sandboxes(api, 14, "lost")
            drive(stack.emu, ids)
            expected = expected_states(stack.emu, ids)
            async with worker(settings, kafka_log, db):
                report = await replay(settings, kafka_log, db, ReplayRequest("stripe", since="1h"), stripe=api)
                assert report.read > len(ids) and report.replayed == report.read
                await wait_for(lambda: settled(pg_dsn, expected), 60, "every sandbox in Stripe's state")
            again = await replay(settings, kafka_log, db, ReplayRequest("stripe", since="1h"), stripe=api)
            # v2 sandbox events are now processed; only events the consumer ignores may be sent again
            assert again.replayed < report.replayed and again.skipped_processed > 0
        pub = await published(kafka_log, settings)
        check_paths(pub, expected)
        assert pub.raw_transition_count == len(pub.transitions)
