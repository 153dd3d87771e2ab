"""A v1 `account.application.deauthorized` the emulator never delivered is recovered by `reconcile` and by
`replay --from-stripe` (both read GET /v1/events for the account events we handle)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.kafka.log import KafkaEventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State
from processor.operations.reconcile import reconcile
from processor.operations.replay import ReplayRequest, replay
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import Stack, create_sandboxes, emulator_stack, settled, wait_for, with_db, worker


async def _flag(dsn: str, sandbox_id: str) -> bool | None:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT (flags->>'app_deauthorized')::boolean FROM sandboxes WHERE id = $1", sandbox_id
        )
    finally:
        await conn.close()
    return None if value is None else bool(value)


async def _history(dsn: str, sandbox_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT kind, event_id, event_type, reason FROM sandbox_history WHERE sandbox_id = $1 ORDER BY id",
            sandbox_id,
        )
    finally:
        await conn.close()


async def _installed_then_lost_uninstall(stack: Stack, api: StripeApi, dsn: str) -> tuple[str, str]:
    """A sandbox claimed into an existing account with the app installed (webhooks delivered and applied),
    then the app uninstalled while delivery is off; returns the sandbox id and the lost event's id."""
    (sandbox_id,) = await create_sandboxes(api, 1, "v1lost")
    sandboxes = stack.emu.state.sandboxes
    sandboxes.claim(sandbox_id, "existing")
    sandboxes.install_app(sandbox_id, True)
    await stack.emu.wait_for_deliveries(within_s=30)
    await wait_for(lambda: settled(dsn, {sandbox_id: State.LIVE}), 60, "the sandbox live")
    await wait_for(lambda: _flag_is(dsn, sandbox_id, False), 60, "the authorization applied")
    stack.emu.set_knobs(delivery_enabled=False)
    sandboxes.uninstall_app(sandbox_id)
    stack.emu.set_knobs(delivery_enabled=True)
    lost = [e for e in stack.emu.state.store.events if e.type == "account.application.deauthorized"]
    assert len(lost) == 1
    assert [a.outcome for a in stack.emu.attempts(lost[0].id)] == ["dropped"]
    return sandbox_id, lost[0].id


async def _flag_is(dsn: str, sandbox_id: str, value: bool) -> bool:
    return await _flag(dsn, sandbox_id) is value


async def test_reconcile_recovers_a_lost_deauthorization(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """Delivery off while the app is uninstalled: reconcile finds the v1 event in GET /v1/events, sets
    app_deauthorized=true and records the repair in the sandbox's history; a second pass finds nothing."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, pg_log, db):
            sandbox_id, lost_id = await _installed_then_lost_uninstall(stack, api, pg_dsn)
            assert await _flag(pg_dsn, sandbox_id) is False
            dry = await reconcile(settings, db, api, age=timedelta(0), dry_run=True)
            assert dry.account_events == [lost_id] and await _flag(pg_dsn, sandbox_id) is False
            repairs: list[str] = []
            report = await reconcile(
                settings, db, api, age=timedelta(0), on_repair=lambda r: repairs.append(str(r.sandbox_id))
            )
            assert report.account_events == [lost_id]
            assert await _flag(pg_dsn, sandbox_id) is True
            assert repairs == [sandbox_id] and report.repairs == 1
            history = await _history(pg_dsn, sandbox_id)
            assert [(h["kind"], h["event_id"]) for h in history if h["event_id"] == lost_id] == [
                ("flag", lost_id),
                ("repair", lost_id),
            ]
            again = await reconcile(settings, db, api, age=timedelta(0))
            assert (again.account_events, again.repairs) == ([], 0)


async def test_replay_from_stripe_recovers_a_lost_deauthorization(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """Delivery off while the app is uninstalled: `replay --from-stripe` re-publishes the v1 event it finds in
    GET /v1/events (keyed by its account, as the ingress would) and the consumer sets app_deauthorized=true."""
    log: EventLog = kafka_log
    async with emulator_stack(kafka_settings, log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, log, db):
            sandbox_id, lost_id = await _installed_then_lost_uninstall(stack, api, pg_dsn)
            dry = await replay(settings, log, db, ReplayRequest("stripe", since="1h"), stripe=api, dry_run=True)
            assert [item["event_id"] for item in dry.listed] == [lost_id]
            report = await replay(settings, log, db, ReplayRequest("stripe", since="1h"), stripe=api)
            assert report.replayed == 1
            await wait_for(lambda: _flag_is(pg_dsn, sandbox_id, True), 60, "the deauthorization applied")
            history = await _history(pg_dsn, sandbox_id)
            assert ("flag", lost_id) in [(h["kind"], h["event_id"]) for h in history]
