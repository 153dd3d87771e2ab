"""Kafka: a member joining while the other has partitions in retry backoff is an uneventful rebalance."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from processor.consumer.loop import ConsumerOptions, run_consumer
from processor.db.pool import Database
from processor.errors import StripeError
from processor.eventlog.kafka.log import KafkaEventLog
from processor.settings import Secret, Settings
from processor.stripe_api.client import Answer, StripeApi
from tests.support.lifecycle_harness import create_sandboxes, emulator_stack, wait_for


class GatedStripe(StripeApi):
    """The emulator's API, except that every sandbox fetch answers 503 (retriable) until `gate` is set."""

    def __init__(self, settings: Settings, gate: asyncio.Event) -> None:
        super().__init__(settings)
        self.gate = gate
        self.failures = 0
        self.failed_ids: set[str] = set()

    async def fetch_sandbox(self, sandbox_id: str, context: str | None = None, **options: Any) -> Answer:
        if not self.gate.is_set():
            self.failures += 1
            self.failed_ids.add(sandbox_id)
            raise StripeError("injected 503", status=503, retriable=True)
        return await super().fetch_sandbox(sandbox_id, context, **options)


def running(*tasks: asyncio.Task[None] | None) -> None:
    """Fail at once if one of the members ended (died)."""
    for task in tasks:
        if task is not None and task.done():
            raise AssertionError(f"{task.get_name()} ended: {task.exception()!r}")


async def until(check: Any, what: str, *tasks: asyncio.Task[None], timeout_s: float = 60.0) -> None:
    """Wait for `check()` while every one of `tasks` keeps running."""
    async def checked() -> bool:
        running(*tasks)
        return bool(check())

    await wait_for(checked, timeout_s, what)


async def test_member_joining_during_backoff_leaves_the_first_member_running(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """While every partition of member 1 waits out a retry backoff, member 2 joins and takes some of them;
    member 1 keeps running through its later backoffs and, once Stripe answers, the two apply every event."""
    async with emulator_stack(kafka_settings, kafka_log) as stack:
        settings = stack.settings
        async with StripeApi(settings) as api:
            ids = await create_sandboxes(api, 12, "rebalance")
        for sid in ids:  # `created` settles without Stripe; `claimed` needs a fetch (onboarding or install next?)
            stack.emu.state.sandboxes.claim(sid, "new")
        await stack.emu.wait_for_deliveries()


        settings = replace(settings, database_url=Secret(pg_dsn))
        gate, stop = asyncio.Event(), asyncio.Event()
        # backoffs of 0.5-1 s: long next to a fetch, so revoked partitions are almost always waiting in one
        options = ConsumerOptions(poll_timeout_s=0.2, retry_base_s=1.0, retry_max_s=1.0)
        async with (
            GatedStripe(settings, gate) as stripe1,
            GatedStripe(settings, gate) as stripe2,
            Database(settings) as db,
        ):
            first = asyncio.create_task(
                run_consumer(settings, kafka_log, db, stop, stripe=stripe1, options=options), name="member 1")
            second: asyncio.Task[None] | None = None
            try:
                await until(lambda: stripe1.failed_ids == set(ids), "member 1 to fail every sandbox", first)
                second = asyncio.create_task(
                    run_consumer(settings, kafka_log, db, stop, stripe=stripe2, options=options), name="member 2")
                await until(lambda: stripe2.failures > 0, "member 2 to own partitions", first, second)
                # member 1 goes through several more backoffs with part of its partitions gone
                seen = stripe1.failures
                await until(lambda: stripe1.failures >= seen + 12, "member 1 to retry its own partitions",
                            first, second)
                gate.set()

                async def applied_and_running() -> bool:
                    running(first, second)
                    async with db.pool.acquire() as conn:
                        rows = await conn.fetch("SELECT id FROM sandboxes WHERE state = 'pending_onboarding'")
                    return {r["id"] for r in rows} >= set(ids)

                await wait_for(applied_and_running, 60, "every sandbox applied with both members running")
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(first, *([second] if second else [])), 60)
