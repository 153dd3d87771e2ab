"""`processor run` with the bundled emulator: one webhook secret for both ends, and a control token to read."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from processor.service import ServiceInfo, run_service
from processor.serving import free_port
from processor.settings import Secret, Settings


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[ServiceInfo]:
    """`processor run` in this event loop (bundled emulator on a free port), stopped on exit."""
    stop = asyncio.Event()
    ready: asyncio.Future[ServiceInfo] = asyncio.get_running_loop().create_future()
    service = asyncio.create_task(
        run_service(settings, stop, emulator_port=0, reconcile_interval_s=0, on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(asyncio.shield(ready), 120)
    finally:
        stop.set()
        await asyncio.wait_for(service, 60)


async def test_configured_webhook_secret_signs_the_bundled_emulators_deliveries(
    tmp_path: Path, pg_settings: Settings
) -> None:
    """With STRIPE_WEBHOOK_SECRETS set and no STRIPE_API_KEY, the emulator signs with the configured secret, so
    its deliveries are accepted (not 400); the control token is in secrets.json and in the banner."""
    port = free_port()
    settings = dataclasses.replace(
        pg_settings, data_dir=tmp_path / "var", port=port, public_url=f"http://127.0.0.1:{port}",
        stripe_webhook_secrets=(Secret("whsec_configured_by_the_operator"),),
    )
    async with running_service(settings) as info:
        stored = json.loads(await asyncio.to_thread((tmp_path / "var" / "secrets.json").read_text))
        token = info.settings.api_tokens[0].reveal()
        async with httpx.AsyncClient(base_url=info.base_url, headers={"Authorization": f"Bearer {token}"}) as api, \
                httpx.AsyncClient(base_url=info.emulator_url or "", timeout=90,
                                  headers={"X-Emulator-Token": stored["emulator_token"]}) as control:
            created = await api.post("/v1/sandboxes", headers={"Idempotency-Key": "pair-1"},
                                     json={"email": "pair@example.com", "country": "US"})
            assert created.status_code == 201, created.text
            await control.post("/_emulator/sandboxes/{}/claim".format(created.json()["id"]), json={"into": "new"})
            assert (await control.post("/_emulator/webhook_attempts/wait", json={"timeout": 60})).status_code == 200
            attempts = (await control.get("/_emulator/webhook_attempts")).json()["data"]
    assert {a["event_type"] for a in attempts} >= {"v2.core.claimable_sandbox.created",
                                                   "v2.core.claimable_sandbox.claimed"}
    assert {(a["attempt"], a["status_code"]) for a in attempts} == {(1, 200)}
    assert stored["emulator_token"] == info.emulator_token and stored["emulator_token"] in info.banner()
