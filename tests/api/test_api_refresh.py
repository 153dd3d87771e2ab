"""The public refresh URL: renews the onboarding link, refuses forged URLs, limits renewals, explains dead ends."""

from __future__ import annotations

from datetime import timedelta

import httpx

from processor.api.refresh import sign
from processor.db.pool import Database
from processor.settings import Secret, Settings
from tests.support.api_harness import SIGNING_KEY, api_stack


async def test_refresh_url_sends_the_user_to_a_new_link(pg_settings: Settings, database: Database) -> None:
    """The refresh URL answers 303 to a new link; an old link leads through it to a working onboarding page."""
    async with api_stack(pg_settings, database) as stack:
        created = (await stack.create("r-1")).json()
        async with httpx.AsyncClient() as browser:  # no API token: the user's browser
            response = await browser.get(created["refresh_url"])
            assert response.status_code == 303
            new_link = response.headers["location"]
            assert new_link != created["onboarding_url"]
            assert new_link == stack.emu.state.store.sandbox(created["id"]).link_url

            # a week later that link has expired: the user who opens it is sent through us to a fresh one
            stack.emu.advance_clock(timedelta(days=8))
            journey = await browser.get(new_link, follow_redirects=True)
            assert journey.status_code == 200
            assert [r.status_code for r in journey.history] == [302, 303]
            assert str(journey.history[1].url) == created["refresh_url"]
            latest = stack.emu.state.store.sandbox(created["id"]).link_url
            assert str(journey.url) == latest != new_link


async def test_forged_or_missing_signatures_are_refused(pg_settings: Settings, database: Database) -> None:
    """Without the right HMAC for this very id the answer is 403 and the link is not renewed."""
    async with api_stack(pg_settings, database) as stack:
        one = (await stack.create("f-1")).json()
        two = (await stack.create("f-2")).json()
        link_before = stack.emu.state.store.sandbox(one["id"]).link_url
        base = f"{stack.url}/sandboxes/{one['id']}/onboarding"
        good_sig = one["refresh_url"].split("sig=")[1]
        forged = [
            base,
            f"{base}?sig=",
            f"{base}?sig={two['refresh_url'].split('sig=')[1]}",  # another sandbox's signature
            f"{base}?sig={good_sig[:-1]}{'A' if good_sig[-1] != 'A' else 'B'}",
            f"{base}?sig={sign(Secret('another-key-0123456789abcdef'), one['id'])}",
            f"{base}?sig=%C3%A9t%C3%A9",
        ]
        async with httpx.AsyncClient() as browser:
            for url in forged:
                response = await browser.get(url)
                assert response.status_code == 403, url
                assert "not valid" in response.text
            assert stack.emu.state.store.sandbox(one["id"]).link_url == link_before
            assert one["refresh_url"].endswith(sign(Secret(SIGNING_KEY), one["id"]))


async def test_renewals_are_rate_limited_per_sandbox(pg_settings: Settings, database: Database) -> None:
    """The 4th renewal of one sandbox within a minute gets 429 with Retry-After; another sandbox is unaffected."""
    async with api_stack(pg_settings, database) as stack:
        busy = (await stack.create("l-1")).json()
        calm = (await stack.create("l-2")).json()
        async with httpx.AsyncClient() as browser:
            statuses = [(await browser.get(busy["refresh_url"])).status_code for _ in range(3)]
            assert statuses == [303, 303, 303]
            limited = await browser.get(busy["refresh_url"])
            assert limited.status_code == 429
            assert 1 <= int(limited.headers["retry-after"]) <= 20
            link = stack.emu.state.store.sandbox(busy["id"]).link_url
            assert (await browser.get(calm["refresh_url"])).status_code == 303
            assert stack.emu.state.store.sandbox(busy["id"]).link_url == link


async def test_expired_claimed_and_live_sandboxes_get_a_page(pg_settings: Settings, database: Database) -> None:
    """Dead ends get a clear HTML page, whether we already know the new state or only Stripe does."""
    async with api_stack(pg_settings, database) as stack:
        ids = {
            name: (await stack.create(f"p-{name}")).json() for name in ("expired", "expired_late", "live", "claimed")
        }
        emu = stack.emu.state.sandboxes
        emu.expire(ids["expired"]["id"])
        await stack.observe(ids["expired"]["id"])
        emu.expire(ids["expired_late"]["id"])  # our consumer has not heard of it yet
        emu.claim(ids["live"]["id"], "existing")
        emu.install_app(ids["live"]["id"])
        await stack.observe(ids["live"]["id"])
        emu.claim(ids["claimed"]["id"], "new")  # not observed either

        async with httpx.AsyncClient() as browser:
            pages = {name: await browser.get(body["refresh_url"]) for name, body in ids.items()}
        for name, status, words in [
            ("expired", 410, "has expired"),
            ("expired_late", 410, "has expired"),
            ("live", 409, "is live"),
            ("claimed", 409, "already been claimed"),
        ]:
            page = pages[name]
            assert page.status_code == status, name
            assert page.headers["content-type"].startswith("text/html")
            assert words in page.text
            assert "invalid_request_error" not in page.text and "Traceback" not in page.text
