"""The console in a real browser: headless Debian chromium (driven by Playwright through its executable path)
against the processor's real HTTP app on a real socket, with the emulator delivering webhooks, the real
consumer and relay, and the session's real PostgreSQL (the PostgreSQL-table log).

One browser for the whole session; each test gets a fresh database, a fresh browser context (no cookies)
and a stack of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.support.console_harness import CHROMIUM, Stack, console_stack


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A browser profile of this test's own: no cookies from another test."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(45_000)  # a loaded 2-core CI machine is slow; nothing waits this long when quiet
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest_asyncio.fixture
async def stack(pg_dsn: str) -> AsyncIterator[Stack]:
    async with console_stack(pg_dsn) as running:
        yield running
