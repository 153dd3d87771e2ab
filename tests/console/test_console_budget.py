"""The overview's Stripe budget tile shows the key's budget shared by every process (its row in PostgreSQL), not
this process's setting: its tokens and rate, and whether a 429 paused or slowed it."""

from __future__ import annotations

from dataclasses import dataclass

from playwright.async_api import BrowserContext, Page

from processor.stripe_api.budget import RECOVERY_S, BudgetPlan, Priority, shared_budget
from tests.support.console_harness import READONLY_TOKEN, Stack, new_page, sign_in

#: the tile prints two decimals
ROUNDING = 0.005


@dataclass(frozen=True)
class Level:
    tokens: float
    rate: float


async def in_database(stack: Stack) -> Level:
    """The budget's level now, from its row as every process sees it (refill and recovery since the row was
    written, on the database's clock)."""
    [row] = await stack.fetch(
        "SELECT tokens, updated_at, slow_factor, slowed_at, clock_timestamp() AS now FROM stripe_budget"
    )
    plan = BudgetPlan.from_settings(stack.settings)
    factor = 1.0
    if row["slowed_at"] is not None:
        factor = min(1.0, row["slow_factor"] + (row["now"] - row["slowed_at"]).total_seconds() / RECOVERY_S)
    rate = plan.rate * factor
    refilled = max(0.0, (row["now"] - row["updated_at"]).total_seconds()) * rate
    return Level(min(plan.capacity, row["tokens"] + refilled), rate)


async def shown(page: Page, stack: Stack) -> tuple[Level, Level, Level, str]:
    """The tile after a reload, and the database's level just before and just after it (both only grow while
    nobody takes a token: the bucket refills and the rate climbs back)."""
    before = await in_database(stack)
    await page.reload()
    after = await in_database(stack)
    tile = page.locator("#stripe-budget")
    level = Level(float(await tile.get_attribute("data-tokens") or "nan"),
                  float(await tile.get_attribute("data-rate") or "nan"))  # fmt: skip
    return before, level, after, await tile.get_attribute("data-throttled") or ""


def between(before: Level, level: Level, after: Level) -> bool:
    return (before.tokens - ROUNDING <= level.tokens <= after.tokens + ROUNDING
            and before.rate - ROUNDING <= level.rate <= after.rate + ROUNDING)  # fmt: skip


async def test_the_budget_tile_shows_the_shared_row_and_a_429s_pause(stack: Stack, context: BrowserContext) -> None:
    """Another process takes tokens, then meets a 429 with Retry-After 600: the tile shows the row's tokens
    and rate each time, first unthrottled, then paused and slowed."""
    other_process = shared_budget(stack.settings, stack.db.pool)
    for _ in range(3):
        await other_process.acquire(Priority.USER)
    plan = BudgetPlan.from_settings(stack.settings)
    async with new_page(context) as page:
        await sign_in(page, stack, READONLY_TOKEN)
        before, level, after, throttled = await shown(page, stack)
        assert between(before, level, after), (before, level, after)
        assert (level.rate, throttled) == (round(plan.rate, 2), "false")
        assert "throttled" not in await page.locator("#stripe-budget-state").inner_text()

        await other_process.throttled(600.0)
        before, level, after, throttled = await shown(page, stack)
        assert between(before, level, after), (before, level, after)
        assert throttled == "true" and level.tokens < 0 and level.rate < plan.rate
        state = await page.locator("#stripe-budget-state").inner_text()
        assert "throttled after a 429: paused" in state and "slowed to" in state, state
