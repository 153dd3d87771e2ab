"""A sandbox's page: Stripe's view on demand and "reconcile this sandbox" repairing a sandbox behind Stripe."""

from __future__ import annotations

from playwright.async_api import BrowserContext

from tests.support.console_harness import (
    OPERATOR_TOKEN,
    READONLY_TOKEN,
    Stack,
    dead_lettered_claims,
    new_page,
    sign_in,
)


async def test_reconcile_from_the_page_brings_a_sandbox_to_stripes_state(stack: Stack, context: BrowserContext) -> None:
    """A sandbox whose claim was dead-lettered is unclaimed here and claimed at Stripe: the page shows both
    (Stripe's view fetched on demand), a replay of its events offers the dead-lettered claim in its dry run,
    and "Reconcile this sandbox" moves it to pending_onboarding with the
    walk recorded as a repair; a read-only sign-in is offered no reconcile."""
    behind, _other = await dead_lettered_claims(stack)
    async with new_page(context) as page:
        await sign_in(page, stack, READONLY_TOKEN)
        await page.goto(f"{stack.console}/sandboxes/{behind}")
        assert await page.get_by_role("button", name="Reconcile this sandbox").count() == 0
    await context.clear_cookies()
    async with new_page(context) as page:
        await sign_in(page, stack, OPERATOR_TOKEN)
        await page.goto(f"{stack.console}/sandboxes/{behind}")
        assert await page.locator("#sandbox-state").inner_text() == "unclaimed"
        await page.get_by_role("link", name="Fetch Stripe's current view").click()
        assert '"status": "claimed"' in await page.locator("#stripe-view").inner_text()
        assert '"app_install_status": "pending_onboarding"' in await page.locator("#stripe-view").inner_text()
        # its dead letter is listed on the page too
        assert "sandbox_not_found" in await page.locator("#sandbox-dead").inner_text()

        # replaying its events would send the dead-lettered claim again and skip the applied `created`
        await page.get_by_role("button", name="Replay its events…").click()
        dry = await page.locator("#dry-run-result").inner_text()
        assert "1 event(s) would be sent" in dry and "1 already applied would be skipped" in dry, dry
        assert "claimed" in await page.locator("#would-replay").inner_text()
        await page.get_by_role("link", name="Cancel").click()

        await page.get_by_role("button", name="Reconcile this sandbox").click()
        assert "Moved to Stripe's state: pending_onboarding" in await page.locator("#reconcile-result").inner_text()
        await page.get_by_role("link", name="Back to the sandbox").click()
        assert await page.locator("#sandbox-state").inner_text() == "pending_onboarding"
        assert await page.locator("#timeline tr.kind-repair").count() >= 1
    assert (await stack.states())[behind] == "pending_onboarding"
