"""The consumer fetches a sandbox from Stripe only when the event and the state we hold cannot tell its state
(real emulator over sockets, counting its requests; real PostgreSQL log and database)."""

from __future__ import annotations

import httpx

from processor.db.pool import Database
from processor.dev.emulator.runner import RunningEmulator
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.consumer.test_consumer_end_to_end import worker
from tests.support.lifecycle_harness import create_sandboxes, emulator_stack, expected_states, settled, wait_for


async def fetches(emu: RunningEmulator) -> int:
    """GETs of a claimable sandbox the emulator answered so far."""
    async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as client:
        [key] = (await client.get("/_emulator/requests")).json()["keys"]
    return int(key["by_operation"].get("retrieve_sandbox", 0))


async def test_real_time_events_are_fetched_only_when_stripe_must_tell(
    pg_settings: Settings, pg_log: PostgresEventLog
) -> None:
    """Events arriving one at a time: `created` and `expired` cost no fetch, `claimed` and `updated` one each,
    and every sandbox still ends in Stripe's state."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        emu, sandboxes = stack.emu, stack.emu.state.sandboxes
        async with StripeApi(stack.settings) as api:
            expires, goes_live, stays = await create_sandboxes(api, 3, "fetches")
        ids = [expires, goes_live, stays]
        dsn = pg_settings.database_url.reveal() if pg_settings.database_url else ""

        async def step(action: object) -> None:
            await emu.wait_for_deliveries(within_s=30)
            await wait_for(lambda: settled(dsn, expected_states(emu, ids)), 30, "the consumer to catch up")

        async with Database(stack.settings) as db, worker(stack.settings, pg_log, db):
            await step(None)  # three `created`: registered from the events alone
            assert await fetches(emu) == 0
            await step(sandboxes.expire(expires))  # `expiring` is a notice, `expired` is final
            assert await fetches(emu) == 0
            await step(sandboxes.claim(goes_live, "existing"))  # pending_install, or onboarding? Stripe knows
            assert await fetches(emu) == 1
            await step(sandboxes.install_app(goes_live, True))
            assert await fetches(emu) == 2
    assert expected_states(emu, ids) == {expires: State.EXPIRED, goes_live: State.LIVE, stays: State.UNCLAIMED}
