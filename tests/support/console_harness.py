"""The console's browser tests' pieces: the processor's HTTP app and worker on a real socket with the emulator
(`console_stack`), sign-in through the form, and waiting for what a user would wait for."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
from playwright.async_api import BrowserContext, Page
from starlette.applications import Starlette
from starlette.routing import Mount

from processor import constants as c
from processor.console.app import Console
from processor.consumer.loop import ConsumerOptions
from processor.db.pool import Database
from processor.dev.emulator.config import EmulatorConfig, Knobs
from processor.dev.emulator.runner import RunningEmulator, running_emulator
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.dlq import list_dlq
from processor.runtime.service import build_http_app
from processor.runtime.serving import free_port, serving
from processor.runtime.worker import WorkerOptions, run_worker
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi

OPERATOR_TOKEN = "console-operator-token-0123456789"
READONLY_TOKEN = "console-readonly-token-0123456789"
WEBHOOK_SECRET = "whsec_console_tests_0123456789"
#: the Debian package's browser; Playwright's own download is never used
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Stack:
    """The processor's HTTP app (ingress, API, console) and worker on a real socket, and the emulator."""

    base_url: str
    settings: Settings
    dsn: str
    emu: RunningEmulator
    db: Database
    log: PostgresEventLog
    app: Starlette

    @property
    def console(self) -> str:
        return f"{self.base_url}/console"

    def console_state(self) -> Console:
        """The console's own state object inside the running app."""
        mount = next(r for r in self.app.routes if isinstance(r, Mount) and r.path == "/console")
        console: Console = mount.app.state.console  # type: ignore[attr-defined]
        return console

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def create_sandboxes(self, count: int, tag: str) -> list[str]:
        params = {"enable_mcp_access": False, "onboarding_link_details": {"refresh_url": "https://p.test/refresh"},
                  "prefill": {"email": "user@p.test", "country": "US"}}
        async with StripeApi(self.settings) as api:
            return [str((await api.create_sandbox(params, idempotency_key=f"{tag}-{i}"))["id"]) for i in range(count)]

    async def states(self) -> dict[str, str]:
        return {r["id"]: r["state"] for r in await self.fetch("SELECT id, state FROM sandboxes")}


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def console_stack(pg_dsn: str) -> AsyncIterator[Stack]:
    """`processor run`'s HTTP app (ingress, API, ops API, console) and worker on a real socket, on `pg_dsn`
    (the PostgreSQL-table log), with the emulator delivering webhooks to it."""
    port = free_port()
    base = Settings(
        database_url=Secret(pg_dsn), topic_prefix=f"c{uuid.uuid4().hex[:8]}.", embedded_partitions=2,
        api_tokens=(Secret(OPERATOR_TOKEN),), console_readonly_tokens=(Secret(READONLY_TOKEN),),
        signing_key=Secret("console-test-signing-key-0123456789"), public_url=f"http://127.0.0.1:{port}",
        stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),), stripe_max_rps=1000.0,
    )
    config = EmulatorConfig(knobs=Knobs(rate_limit_rps=0), seed=11)
    async with running_emulator(config) as emu, Database(base) as db:
        settings = replace(base, stripe_api_key=Secret(emu.api_key), stripe_api_base=emu.base_url)
        event_log = PostgresEventLog(db.pool, partitions=2, session_timeout_s=2.0)
        async with event_log, StripeApi(settings) as api:
            await event_log.ensure_topics([settings.topic(name) for name in c.ALL_TOPICS])
            app = build_http_app(settings, event_log, db, api)
            stop = asyncio.Event()
            # not-found retries short: events of a sandbox Stripe does not show yet reach the DLQ in a second
            options = WorkerOptions(consumer=ConsumerOptions(batch_size=200, not_found_delay_s=0.05))
            async with serving(app, port=port) as url:
                emu.add_webhook_endpoint(f"{url}/webhooks/stripe", WEBHOOK_SECRET)
                worker = asyncio.create_task(run_worker(settings, event_log, db, stop, options))
                try:
                    yield Stack(url, settings, pg_dsn, emu, db, event_log, app)
                finally:
                    stop.set()
                    await asyncio.wait_for(worker, 30)


async def dead_lettered_claims(stack: Stack) -> tuple[str, str]:
    """Two sandboxes whose `claimed` events were dead-lettered: Stripe's reads lagged longer than the consumer's
    not-found retries. The lag is over when this returns, so a replay now succeeds."""
    first, second, _third = await stack.create_sandboxes(3, "dlq")

    async def registered() -> bool:
        return set((await stack.states()).values()) == {"unclaimed"} and len(await stack.states()) == 3

    await wait_for(registered, "three unclaimed sandboxes")
    stack.emu.set_knobs(read_lag_s=600.0)
    stack.emu.state.sandboxes.claim(first, "new")
    stack.emu.state.sandboxes.claim(second, "new")

    async def both_dead() -> bool:
        return len(await list_dlq(stack.settings, stack.log, stack.db)) == 2

    await wait_for(both_dead, "both claimed events in the DLQ")
    stack.emu.set_knobs(read_lag_s=0.0)
    return first, second


async def open_coordinates(stack: Stack) -> dict[str, str]:
    """sandbox id -> coordinate of its open dead letter."""
    return {e.sandbox_id or "": e.coordinate for e in await list_dlq(stack.settings, stack.log, stack.db)}


async def sign_in(page: Page, stack: Stack, token: str) -> None:
    """Sign in through the form, as an operator would."""
    await page.goto(f"{stack.console}/signin")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.console}/")


@contextlib.asynccontextmanager
async def new_page(context: BrowserContext) -> AsyncIterator[Page]:
    page = await context.new_page()
    try:
        yield page
    finally:
        await page.close()
