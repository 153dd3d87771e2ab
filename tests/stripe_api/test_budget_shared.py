"""The shared Stripe budget on real PostgreSQL, and against the real emulator over sockets: clients with their
own connections (as separate processes have) share one key's limit, users go first, a 429 slows everyone."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from prometheus_client import CollectorRegistry

from processor.db.pool import Database
from processor.dev.emulator import EmulatorConfig, Knobs, RunningEmulator, running_emulator
from processor.errors import StripeError
from processor.settings import Secret, Settings
from processor.stripe_api.budget import (
    MAX_TOKENS_PER_ASK,
    Budget,
    BudgetMetrics,
    BudgetPlan,
    Priority,
    read_budget,
    shared_budget,
)
from processor.stripe_api.client import StripeApi


@contextlib.asynccontextmanager
async def clients(settings: Settings, count: int) -> AsyncIterator[list[Database]]:
    """`count` databases with a pool each: what `count` processes would hold."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Database(settings, max_size=2)) for _ in range(count)]


def emulator_settings(base: Settings, emu: RunningEmulator, limit: float) -> Settings:
    return replace(base, stripe_api_key=Secret(emu.api_key), stripe_api_base=emu.base_url, stripe_max_rps=limit)


async def usage(emu: RunningEmulator) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as client:
        [key] = (await client.get("/_emulator/requests")).json()["keys"]
    return dict(key)


async def test_two_clients_of_one_key_stay_within_its_limit(pg_settings: Settings) -> None:
    """Two clients, each with its own connections, never draw more than the key's limit: no 429 from Stripe,
    though either alone would be allowed the whole limit."""
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=10))) as emu:
        settings = emulator_settings(pg_settings, emu, limit=10.0)
        async with clients(settings, 2) as dbs, contextlib.AsyncExitStack() as stack:
            apis = [
                await stack.enter_async_context(
                    StripeApi(settings, budget=shared_budget(settings, db.pool), max_attempts=1)
                )
                for db in dbs
            ]

            async def burst(api: StripeApi) -> None:
                await asyncio.gather(*(api.list_events({"limit": 1}) for _ in range(12)))

            await asyncio.gather(*(burst(api) for api in apis))  # a 429 would raise: one attempt each
        seen = await usage(emu)
    assert seen["requests"] == 24 and seen["rate_limited"] == 0


async def asks_behind_backlog(settings: Settings, dbs: list[Database], backlog: Priority, urgent: Priority) -> float:
    """Round trips one `urgent` call from the last client needs while the others drain a `backlog`."""
    *drainers, last = dbs
    taken = 0
    draining, enough = asyncio.Event(), asyncio.Event()

    async def drain(budget: Budget) -> None:
        nonlocal taken
        while not enough.is_set():
            await budget.acquire(backlog)
            taken += 1
            if taken >= 10:  # the bucket's burst is long gone: the backlog waits on the refill
                draining.set()

    budgets = [shared_budget(settings, db.pool) for db in drainers]
    tasks = [asyncio.create_task(drain(budget)) for budget in budgets for _ in range(4)]
    await draining.wait()
    metrics = BudgetMetrics(CollectorRegistry())
    await shared_budget(settings, last.pool, metrics).acquire(urgent)
    enough.set()
    await asyncio.gather(*tasks)
    return float(metrics.round_trips._value.get())


@pytest.mark.parametrize(
    ("backlog", "urgent"), [(Priority.CONSUMER, Priority.USER), (Priority.BACKGROUND, Priority.CONSUMER)]
)
async def test_higher_priorities_are_served_first_while_a_backlog_drains(
    pg_settings: Settings, backlog: Priority, urgent: Priority
) -> None:
    """While two clients drain a backlog at one priority, a call of a higher priority from a third client gets
    its token on its first ask: the backlog always leaves it one."""
    settings = replace(pg_settings, stripe_api_key=Secret("sk_test_priorities"), stripe_max_rps=40.0)
    async with clients(settings, 3) as dbs:
        asked = await asks_behind_backlog(settings, dbs, backlog, urgent)
    assert asked == 1, f"a {urgent.label} call asked {asked} times behind a {backlog.label} backlog"


async def test_a_429_slows_every_client_of_the_key(pg_settings: Settings) -> None:
    """Stripe's 429 to one client pauses the budget for the others (Retry-After) and halves its rate; a
    lock_timeout 429 (one object busy) does not."""
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=2))) as emu:
        settings = emulator_settings(pg_settings, emu, limit=100.0)  # we think the key allows far more
        async with clients(settings, 2) as (one, two):
            metrics = BudgetMetrics(CollectorRegistry())
            async with StripeApi(settings, budget=shared_budget(settings, one.pool, metrics), max_attempts=1) as api:
                # every call ends inside the block (a call still running after it would reopen the client)
                answers = await asyncio.gather(*(api.list_events({"limit": 1}) for _ in range(6)),
                                               return_exceptions=True)
            # what every client of the key reads when it takes a token: the rate halved
            factor = await two.pool.fetchval("SELECT slow_factor FROM stripe_budget")
            # and what the other process's gauges show (refreshed from the row as its workers do): slowed, the
            # rate climbing back over RECOVERY_S
            level = await read_budget(settings, two.pool)
            registry = CollectorRegistry()
            assert level is not None
            BudgetMetrics(registry).show(level)
    assert any(isinstance(a, StripeError) and a.status == 429 for a in answers)
    assert metrics.throttled._value.get() >= 1
    assert factor == pytest.approx(0.5, abs=0.01)  # halved once per wave of 429s, however many met it
    assert registry.get_sample_value("processor_stripe_budget_throttled") == 1
    assert (registry.get_sample_value("processor_stripe_budget_rate") or 0) < BudgetPlan.from_settings(settings).rate


async def test_calls_queued_in_one_process_share_round_trips(pg_settings: Settings) -> None:
    """A hundred calls waiting in one process take their tokens in a few queries: the first asks for itself,
    each next one for up to MAX_TOKENS_PER_ASK waiters (the key's limit with such asks: the test above)."""
    settings = replace(pg_settings, stripe_api_key=Secret("sk_test_queued"), stripe_max_rps=10_000.0)
    async with clients(settings, 1) as [db]:
        metrics = BudgetMetrics(CollectorRegistry())
        budget = shared_budget(settings, db.pool, metrics)
        assert BudgetPlan.from_settings(settings).capacity >= 100  # no call waits for a refill
        await asyncio.gather(*(budget.acquire(Priority.CONSUMER) for _ in range(100)))
    assert metrics.round_trips._value.get() == 1 + math.ceil(99 / MAX_TOKENS_PER_ASK)
    assert metrics.taken.labels(priority="consumer")._value.get() == 100
