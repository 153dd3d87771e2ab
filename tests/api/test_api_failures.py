"""Stripe failures become 503 (retry later) or 502 (Stripe refused), with a small body and no traceback."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from processor.api import build_api_routes
from processor.api.refresh import refresh_url
from processor.db.pool import Database
from processor.errors import ConfigError
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.api_harness import api_stack


async def test_stripe_outage_answers_503_and_a_retry_succeeds(pg_settings: Settings, database: Database) -> None:
    """While Stripe fails every call: 503 + Retry-After (JSON for the API, a page for the user); then 201."""
    async with api_stack(pg_settings, database) as stack:
        sandbox = (await stack.create("o-0")).json()
        stack.emu.set_knobs(api_error_rate=1.0, api_error_statuses=(500, 503))
        create = await stack.create("o-1")
        async with httpx.AsyncClient() as browser:
            refresh = await browser.get(sandbox["refresh_url"])
        assert create.status_code == 503
        assert create.json()["code"] == "stripe_unavailable"
        assert int(create.headers["retry-after"]) > 0
        assert refresh.status_code == 503 and int(refresh.headers["retry-after"]) > 0
        for response in (create, refresh):
            assert "Traceback" not in response.text and "internal_error" not in response.text

        stack.emu.set_knobs(api_error_rate=0.0)
        retried = await stack.create("o-1")
        assert retried.status_code == 201
        assert retried.json()["state"] == "unclaimed"


async def test_stripe_refusing_us_answers_502(pg_settings: Settings, database: Database) -> None:
    """A Stripe error that retrying cannot fix (here: a revoked API key) is a 502 problem saying so."""
    async with api_stack(pg_settings, database, stripe_key="sk_test_revoked_000000000000") as stack:
        create = await stack.create("x-1")
        assert create.status_code == 502
        assert create.headers["content-type"] == "application/problem+json"
        assert create.json() == {
            "type": "about:blank",
            "title": "Bad Gateway",
            "status": 502,
            "detail": "Stripe rejected the request; retrying the same request will not help.",
            "code": "stripe_error",
        }
        assert stack.emu.state.store.sandboxes == {}


async def test_the_api_needs_a_signing_key(pg_settings: Settings, database: Database) -> None:
    """Without a signing key the routes are not built (refresh URLs could not be signed)."""
    settings = replace(pg_settings, stripe_api_key=Secret("sk_test_x"), signing_key=None)
    async with StripeApi(settings) as stripe:
        with pytest.raises(ConfigError, match="PROCESSOR_SIGNING_KEY"):
            build_api_routes(settings, database, stripe)
        assert build_api_routes(settings, database, stripe, signing_key=Secret("k" * 32))


async def test_unknown_sandbox_refresh_gets_a_page(pg_settings: Settings, database: Database) -> None:
    """A validly signed URL for a sandbox Stripe does not know gets a 404 page, not a Stripe error."""
    async with api_stack(pg_settings, database) as stack:
        url = refresh_url(stack.url, stack.settings.signing_key or Secret(""), "clmsbx_test_gone")
        async with httpx.AsyncClient() as browser:
            page = await browser.get(url)
        assert page.status_code == 404
        assert "Sandbox not found" in page.text
