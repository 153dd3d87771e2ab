"""The overview and the stuck list, read in the browser after a small run, against what the database holds."""

from __future__ import annotations

from collections import Counter

from playwright.async_api import BrowserContext, Page

from tests.support.console_harness import OPERATOR_TOKEN, READONLY_TOKEN, Stack, new_page, sign_in, wait_for

#: what the Dashboard user does with each sandbox of the small run (by index modulo the list)
PATHS = ("live", "pending_onboarding", "pending_install", "expired", "unclaimed", "pending_onboarding")


async def small_run(stack: Stack) -> dict[str, str]:
    """Twelve sandboxes walked down several paths, settled in the database; returns the expected states."""
    ids = await stack.create_sandboxes(12, "overview")
    sandboxes = stack.emu.state.sandboxes
    expected = {}
    for i, sid in enumerate(ids):
        path = PATHS[i % len(PATHS)]
        if path in ("live", "pending_onboarding", "pending_install"):
            sandboxes.claim(sid, "new")
        if path in ("live", "pending_install"):
            sandboxes.submit_application(sid)
        if path == "live":
            sandboxes.install_app(sid, True)
        if path == "expired":
            sandboxes.expire(sid)
        expected[sid] = path

    async def settled() -> bool:
        return await stack.states() == expected

    await wait_for(settled, "every sandbox in its state in the database")
    return expected


async def cell(page: Page, selector: str) -> int:
    return int(await page.locator(selector).inner_text())


async def test_overview_shows_what_the_database_holds(stack: Stack, context: BrowserContext) -> None:
    """After a small run the overview's count per state, total, conversion, lag and DLQ size are the database's
    and the log's figures, and both charts are drawn."""
    expected = await small_run(stack)
    async with new_page(context) as page:
        await sign_in(page, stack, READONLY_TOKEN)  # looking needs no more than the read-only role
        rows = await stack.fetch("SELECT state, count(*) AS n FROM sandboxes GROUP BY state")
        in_db = {r["state"]: r["n"] for r in rows}
        assert in_db == Counter(expected.values())
        for state in ("unclaimed", "claimed", "pending_onboarding", "pending_install", "installed", "live", "expired"):
            assert await cell(page, f'#state-counts td[data-state="{state}"]') == in_db.get(state, 0), state
        assert await cell(page, "#total-sandboxes") == 12

        # of the 12 that entered unclaimed, those claimed moved on: 8 (live, pending_onboarding x4, pending_install x2)
        claimed = sum(1 for s in expected.values() if s not in ("unclaimed", "expired"))
        step = page.locator('#conversions tr[data-step="unclaimed"] td')
        assert [await step.nth(i).inner_text() for i in (1, 2)] == ["12", str(claimed)]
        assert await step.nth(3).inner_text() == f"{round(claimed * 100 / 12)}%"

        transitions = await stack.fetch("SELECT count(*) AS n FROM sandbox_history WHERE kind = 'transition'")
        assert f"{transitions[0]['n']} transitions in the last 24h" in await page.locator("#hours-h + p").inner_text()
        assert await page.locator("svg[role=img]").count() >= 3  # funnel, transitions per hour, outcomes

        async def caught_up() -> bool:
            await page.reload()
            return await cell(page, "#consumer-lag") == 0 and await cell(page, "#outbox-pending") == 0

        await wait_for(caught_up, "the overview to show the consumer caught up")
        assert await cell(page, "#dlq-open") == 0
        delivered = sum(1 for a in stack.emu.attempts() if a.outcome == "succeeded")
        assert await cell(page, '#deliveries td[data-delivery="accepted"]') == delivered


async def test_an_operator_finds_a_stuck_sandbox_and_opens_it(stack: Stack, context: BrowserContext) -> None:
    """The stuck list filtered by state finds exactly the sandboxes left in pending_onboarding, with the state of
    their onboarding link; a click opens the sandbox's timeline with its observed and inferred steps."""
    expected = await small_run(stack)
    waiting = sorted(sid for sid, state in expected.items() if state == "pending_onboarding")
    async with new_page(context) as page:
        await sign_in(page, stack, OPERATOR_TOKEN)
        await page.get_by_role("link", name="Stuck sandboxes").click()
        await page.get_by_label("In state").select_option("pending_onboarding")
        await page.get_by_label("for more than").fill("0s")
        await page.get_by_role("button", name="Find").click()
        rows = page.locator("#stuck tbody tr[data-sandbox]")
        listed = sorted([await rows.nth(i).get_attribute("data-sandbox") or "" for i in range(await rows.count())])
        assert listed == waiting
        assert "onboarding is not finished" in await rows.first.inner_text()

        await page.get_by_role("link", name=waiting[0]).click()
        assert await page.locator("#sandbox-state").inner_text() == "pending_onboarding"
        timeline = page.locator("#timeline tbody tr.kind-transition")
        texts = [await timeline.nth(i).inner_text() for i in range(await timeline.count())]
        # unclaimed, then claimed and pending_onboarding: one fetched observation walked through claimed
        assert any("pending_onboarding" in t and "observed" in t for t in texts)
        assert any("claimed" in t for t in texts)

        # a longer wait than anything has waited finds nothing
        await page.goto(f"{stack.console}/stuck?state=pending_onboarding&older_than=3d")
        assert await page.locator("#stuck tbody tr[data-sandbox]").count() == 0
