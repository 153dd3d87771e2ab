"""Dead letters from the browser: replay a selected record and see its sandbox advance; CSRF and role refusals."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Page

from processor.operations.dlq import list_dlq
from tests.support.console_harness import (
    OPERATOR_TOKEN,
    READONLY_TOKEN,
    Stack,
    dead_lettered_claims,
    new_page,
    open_coordinates,
    sign_in,
    wait_for,
)


async def csrf_of(page: Page) -> str:
    """The session's CSRF token, as every form of the page carries it (here: the sign-out form's)."""
    return await page.locator("form.signout input[name=csrf]").get_attribute("value") or ""


async def test_replaying_a_selected_dead_letter_advances_its_sandbox(stack: Stack, context: BrowserContext) -> None:
    """The operator filters the DLQ, ticks one record, sees the dry run, confirms, watches the run finish, and
    finds the sandbox advanced to Stripe's state; the record not selected stays dead-lettered, its sandbox
    unclaimed; the run is listed with its counts."""
    first, second = await dead_lettered_claims(stack)
    coordinates = await open_coordinates(stack)
    async with new_page(context) as page:
        await sign_in(page, stack, OPERATOR_TOKEN)
        await page.get_by_role("link", name="Dead letters", exact=True).click()
        await page.get_by_label("Error class").select_option("sandbox_not_found")
        await page.get_by_role("button", name="Filter").click()
        assert await page.locator("#dlq tbody tr[data-coordinate]").count() == 2

        await page.get_by_label(f"select {coordinates[first]}").check()
        await page.get_by_role("button", name="Replay…").click()
        assert "Dry run: 1 event(s) would be sent" in await page.locator("#dry-run-result").inner_text()
        assert await stack.fetch("SELECT run_id FROM replay_runs") == []  # a dry run records no run

        await page.get_by_role("button", name="Replay 1 event(s)").click()
        await page.wait_for_url(f"{stack.console}/replays/**")
        # the page refreshes itself while the run goes on; it ends with the counts
        await page.locator("#replay-status", has_text="Finished").wait_for()
        assert await page.locator("#replayed-count").inner_text() == "1"

        await page.goto(f"{stack.console}/sandboxes/{first}")

        async def advanced() -> bool:
            await page.reload()
            return await page.locator("#sandbox-state").inner_text() == "pending_onboarding"

        await wait_for(advanced, "the replayed sandbox to reach pending_onboarding")
        assert (await stack.states())[second] == "unclaimed"

        await page.get_by_role("link", name="Dead letters", exact=True).click()
        left = page.locator("#dlq tbody tr[data-coordinate]")
        assert await left.count() == 1 and await left.first.get_attribute("data-coordinate") == coordinates[second]

        await page.get_by_role("link", name="Replays", exact=True).click()
        run = page.locator("#replays tbody tr[data-run]")
        assert await run.count() == 1
        assert "finished" in await run.first.inner_text()


async def test_posts_without_the_csrf_token_or_from_another_origin_change_nothing(
    stack: Stack, context: BrowserContext
) -> None:
    """A signed-in operator's browser posting a replay without the form's token, with a wrong one, or from
    another site's page is refused (403), and nothing is replayed or purged."""
    await dead_lettered_claims(stack)
    async with new_page(context) as page:
        await sign_in(page, stack, OPERATOR_TOKEN)
        token = await csrf_of(page)
        attempts = [
            ({"scope": "matching", "step": "confirm"}, {}),
            ({"scope": "matching", "step": "confirm", "csrf": "0" * 64}, {}),
            ({"scope": "matching", "step": "confirm", "csrf": token}, {"Origin": "http://attacker.example"}),
        ]
        for form, headers in attempts:
            for path in ("/dlq/replay", "/dlq/purge"):
                answer = await page.request.post(f"{stack.console}{path}", form=form, headers=headers)
                assert answer.status == 403, (path, form, headers)
                assert "security token" in await answer.text()
    assert len(await list_dlq(stack.settings, stack.log, stack.db)) == 2
    assert await stack.fetch("SELECT run_id FROM replay_runs") == []
    assert set((await stack.states()).values()) == {"unclaimed"}


async def test_the_read_only_role_can_look_but_not_replay(stack: Stack, context: BrowserContext) -> None:
    """A read-only sign-in sees the dead letters but is offered no replay or purge, and its own valid posts are
    refused (403), leaving the DLQ as it was."""
    await dead_lettered_claims(stack)
    async with new_page(context) as page:
        await sign_in(page, stack, READONLY_TOKEN)
        await page.get_by_role("link", name="Dead letters", exact=True).click()
        assert await page.locator("#dlq tbody tr[data-coordinate]").count() == 2
        assert await page.get_by_role("button", name="Replay…").count() == 0
        assert await page.locator("#dlq input[type=checkbox]").count() == 0
        token = await csrf_of(page)
        for path in ("/dlq/replay", "/dlq/purge"):
            answer = await page.request.post(f"{stack.console}{path}",
                                             form={"scope": "matching", "step": "confirm", "csrf": token})
            assert answer.status == 403
            assert "read-only" in await answer.text()
    assert len(await list_dlq(stack.settings, stack.log, stack.db)) == 2
    assert await stack.fetch("SELECT run_id FROM replay_runs") == []


async def test_purging_a_selected_dead_letter_after_confirmation(stack: Stack, context: BrowserContext) -> None:
    """Purge asks first, listing what it would purge; confirmed, the record leaves the open list (on the
    PostgreSQL log it is deleted), the other stays, and no sandbox moves."""
    first, second = await dead_lettered_claims(stack)
    coordinates = await open_coordinates(stack)
    async with new_page(context) as page:
        await sign_in(page, stack, OPERATOR_TOKEN)
        await page.get_by_role("link", name="Dead letters", exact=True).click()
        await page.get_by_label(f"select {coordinates[first]}").check()
        await page.get_by_role("button", name="Purge…").click()
        assert await stack.fetch("SELECT * FROM dlq_replays") == []  # asking purges nothing
        await page.get_by_role("button", name="Purge 1 record(s)").click()
        assert "1 record(s) purged" in await page.locator("#purge-result").inner_text()

        await page.get_by_role("link", name="Back to the dead letters").click()
        left = page.locator("#dlq tbody tr[data-coordinate]")
        assert await left.count() == 1 and await left.first.get_attribute("data-coordinate") == coordinates[second]
    assert {(await stack.states())[sid] for sid in (first, second)} == {"unclaimed"}
