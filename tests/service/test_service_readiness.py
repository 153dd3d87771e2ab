"""`processor run`'s /readyz shows the worker: not ready until it runs, and not ready once it stopped."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.runtime.metrics import WorkerMetrics
from processor.runtime.service import build_http_app
from processor.runtime.serving import serving
from processor.runtime.worker import WorkerStatus
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi


async def _fails() -> None:
    raise RuntimeError("a bug the worker cannot go on from")


async def test_readyz_turns_red_when_the_worker_is_not_running(
    pg_settings: Settings, pg_log: PostgresEventLog, database: Database
) -> None:
    """With the ingress able to write, /readyz is 503 before the worker runs, 200 while it runs, and 503 with a
    reason once a part of it ended (the ingress itself keeps answering)."""
    settings = replace(pg_settings, stripe_webhook_secrets=(Secret("whsec_readiness_0123456789"),),
                       signing_key=Secret("k" * 32), api_tokens=(Secret("t" * 32),),
                       stripe_api_key=Secret("sk_test_unused_here"))
    status = WorkerStatus()
    running = asyncio.create_task(asyncio.Event().wait(), name="outbox-relay")
    dead = asyncio.create_task(_fails(), name="lifecycle-consumer")
    await asyncio.gather(dead, return_exceptions=True)
    try:
        async with (
            StripeApi(settings) as stripe,
            serving(build_http_app(settings, pg_log, database, stripe, WorkerMetrics(), status)) as url,
            httpx.AsyncClient(base_url=url) as http,
        ):
            assert (await http.get("/readyz")).status_code == 503
            status.tasks = [running]
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
            status.tasks = [dead, running]
            stopped = await http.get("/readyz")
            assert stopped.status_code == 503
            assert "worker stopped" in stopped.json()["reason"]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        running.cancel()
