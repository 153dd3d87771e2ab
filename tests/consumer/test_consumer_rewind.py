"""A partition rewound after a retriable error is read again from the rewound offset and never skipped, even when
it is resumed and re-read while the batch that rewound it is still committing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from processor import constants as c
from processor.consumer.loop import ConsumerOptions, run_consumer
from processor.db.pool import Database
from processor.errors import StripeError
from processor.eventlog.postgres.log import PostgresEventLog
from processor.settings import Settings
from processor.stripe_api.client import Answer, StripeApi
from tests.support.lifecycle_harness import create_sandboxes, emulator_stack, wait_for


class FailsOnceFor(StripeApi):
    """The emulator's API, except that the first fetch of one sandbox answers 503 (a retriable error)."""

    def __init__(self, settings: Settings, sandbox_id: str) -> None:
        super().__init__(settings)
        self.sandbox_id = sandbox_id
        self.calls = 0
        self.refetched = asyncio.Event()

    async def fetch_sandbox(self, sandbox_id: str, context: str | None = None, **options: Any) -> Answer:
        if sandbox_id == self.sandbox_id:
            self.calls += 1
            if self.calls == 1:
                raise StripeError("injected 503", status=503, retriable=True)
            self.refetched.set()
        return await super().fetch_sandbox(sandbox_id, context, **options)


async def test_partition_reread_while_the_rewinding_batch_commits_is_applied(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """Batch 1 fails one sandbox's fetch (its partition is rewound) and its commit of the other partitions is held
    by a lock; meanwhile the rewound partition's backoff ends and it is read again. Once the commit goes through,
    that sandbox is still applied and every partition is committed to its end."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = stack.settings
        async with StripeApi(settings) as api:
            ids = await create_sandboxes(api, 8, "rewind")
        for sid in ids:  # `created` settles without Stripe; `claimed` needs a fetch (onboarding or install next?)
            stack.emu.state.sandboxes.claim(sid, "new")
        await stack.emu.wait_for_deliveries()
        events = settings.topic(c.TOPIC_EVENTS)
        ends = await pg_log.end_offsets(events)
        reader = pg_log.consumer(settings.topic(c.GROUP_LIFECYCLE), [events])  # not started: reads commits only
        blocker = await asyncpg.connect(pg_dsn)
        commits_held = blocker.transaction()
        await commits_held.start()
        await blocker.execute("LOCK TABLE log_group_offsets IN EXCLUSIVE MODE")  # reads pass, commits wait
        stop = asyncio.Event()
        options = ConsumerOptions(poll_timeout_s=0.1, retry_base_s=0.05, retry_max_s=0.1)
        async with FailsOnceFor(settings, ids[0]) as stripe, Database(settings) as db:
            consuming = asyncio.create_task(run_consumer(settings, pg_log, db, stop, stripe=stripe, options=options))
            try:
                await asyncio.wait_for(stripe.refetched.wait(), 60)  # re-read while batch 1's commit waits
                await commits_held.rollback()

                async def applied() -> set[str]:
                    async with db.pool.acquire() as conn:
                        rows = await conn.fetch("SELECT id FROM sandboxes WHERE state = 'pending_onboarding'")
                        return {r["id"] for r in rows}

                async def all_committed() -> bool:
                    return [await reader.committed(tp) for tp in ends] == [end or None for end in ends.values()]

                await wait_for(lambda: _contains(applied(), set(ids)), 30, "every sandbox applied")
                await wait_for(all_committed, 30, "every partition committed to its end")
            finally:
                await blocker.close()
                stop.set()
                await asyncio.wait_for(consuming, 30)


async def _contains(found: Any, wanted: set[str]) -> bool:
    return wanted <= await found
