"""Sign-in: nothing without a session, a wrong token refused, a session cookie the page's scripts cannot read."""

from __future__ import annotations

from playwright.async_api import BrowserContext, Response

from processor.console.session import LOCKOUT_S, SIGNIN_ATTEMPTS
from processor.tokenbucket import TokenBuckets
from tests.support.console_harness import OPERATOR_TOKEN, Stack, new_page, sign_in


async def test_every_page_needs_a_session_and_a_wrong_token_gets_none(stack: Stack, context: BrowserContext) -> None:
    """Without signing in every page sends the browser to the sign-in form; a wrong token is refused there and
    still opens nothing; the operator token opens the overview with an HttpOnly, SameSite=Strict, expiring
    session cookie scoped to /console/, and signing out ends it."""
    async with new_page(context) as page:
        for path in ("/", "/stuck", "/dlq", "/replays", "/sandboxes/csb_anything", "/dlq/0:0"):
            await page.goto(f"{stack.console}{path}")
            assert page.url == f"{stack.console}/signin", path
            assert await page.get_by_role("heading", name="Sign in").is_visible()

        await page.get_by_label("API token").fill("not-a-token")
        await page.get_by_role("button", name="Sign in").click()
        assert await page.locator("#signin-error").inner_text() == "That token is not valid."
        await page.goto(f"{stack.console}/dlq")
        assert page.url == f"{stack.console}/signin"

        await sign_in(page, stack, OPERATOR_TOKEN)
        assert await page.get_by_role("heading", name="Overview").is_visible()
        cookie = next(c for c in await context.cookies() if c["name"] == "processor_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console/"
        assert cookie["expires"] > 0  # a persistent cookie with an end, not one that lives as long as the browser
        assert OPERATOR_TOKEN not in cookie["value"]
        # the page's own scripts cannot read it (HttpOnly), whatever a page might run
        assert "processor_console=" not in await page.evaluate("document.cookie")

        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{stack.console}/signin")
        await page.goto(f"{stack.console}/")
        assert page.url == f"{stack.console}/signin"


async def test_a_forged_session_cookie_opens_nothing(stack: Stack, context: BrowserContext) -> None:
    """A session cookie not signed with the processor's key (a guessed or edited one) is ignored."""
    await context.add_cookies([{
        "name": "processor_console", "value": "eyJzaWQiOiJ4Iiwicm9sZSI6Im9wZXJhdG9yIiwiZnAiOiJ4In0.AAAA.BBBB",
        "url": f"{stack.console}/",
    }])
    async with new_page(context) as page:
        await page.goto(f"{stack.console}/dlq")
        assert page.url == f"{stack.console}/signin"


async def test_sign_in_attempts_are_capped_per_client(stack: Stack, context: BrowserContext) -> None:
    """After SIGNIN_ATTEMPTS wrong tokens in a minute the form stops checking tokens for LOCKOUT_S, the right
    one too, and says when to try again: guessing costs a minute per ten tries."""
    async with new_page(context) as page:
        await page.goto(f"{stack.console}/signin")

        async def attempt(token: str) -> Response:
            await page.get_by_label("API token").fill(token)
            async with page.expect_response(lambda r: r.request.method == "POST") as answered:
                await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_load_state()
            return await answered.value

        # the minute stands still for this test: no attempt is refilled however slowly the machine runs
        stack.console_state().signin_attempts = TokenBuckets.per_period(SIGNIN_ATTEMPTS, 60.0, clock=lambda: 0.0)
        statuses = [(await attempt("not-a-token")).status for _ in range(SIGNIN_ATTEMPTS)]
        assert statuses == [401] * SIGNIN_ATTEMPTS
        response = await attempt(OPERATOR_TOKEN)
        assert response.status == 429
        assert response.headers["retry-after"] == str(LOCKOUT_S)
        assert (await page.locator("#signin-error").inner_text()).startswith("Too many sign-in attempts.")
        await page.goto(f"{stack.console}/")
        assert page.url == f"{stack.console}/signin"  # the right token did not open a session either
