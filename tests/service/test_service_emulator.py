"""`processor run` with the bundled emulator: one webhook secret for both ends, and a control token to read."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from processor.cli.run import emulator_knobs
from processor.errors import ConfigError
from processor.runtime.service import EMULATOR_STATE_FILE, EmulatorOptions, ServiceInfo, run_service
from processor.runtime.serving import free_port
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi


@contextlib.asynccontextmanager
async def running_service(settings: Settings, emulator: EmulatorOptions | None = None) -> AsyncIterator[ServiceInfo]:
    """`processor run` in this event loop (bundled emulator on a free port), stopped on exit."""
    stop = asyncio.Event()
    ready: asyncio.Future[ServiceInfo] = asyncio.get_running_loop().create_future()
    service = asyncio.create_task(run_service(
        settings, stop, emulator_port=0, reconcile_interval_s=0, on_ready=ready.set_result, emulator=emulator))
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


async def test_emulator_knobs_at_start_and_state_kept_across_restarts(tmp_path: Path, pg_settings: Settings) -> None:
    """`processor run` starts its emulator with the knobs it was given (delivery off, duplicates) and, asked to
    keep its state, finds the sandbox it created and its events again after a restart, from a 0600 file in the
    data directory; without the option the emulator starts empty."""
    port = free_port()
    settings = dataclasses.replace(pg_settings, data_dir=tmp_path / "var", port=port,
                                   public_url=f"http://127.0.0.1:{port}")
    options = EmulatorOptions(knobs={"delivery_enabled": False, "duplicate_rate": 0.5}, keep_state=True)

    def clients(info: ServiceInfo) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        token = info.settings.api_tokens[0].reveal()
        api = httpx.AsyncClient(base_url=info.base_url, headers={"Authorization": f"Bearer {token}"})
        control = httpx.AsyncClient(
            base_url=info.emulator_url or "", headers={"X-Emulator-Token": info.emulator_token or ""}
        )
        return api, control

    async with running_service(settings, options) as info:
        api, control = clients(info)
        async with api, control:
            knobs = (await control.get("/_emulator/config")).json()
            assert (knobs["delivery_enabled"], knobs["duplicate_rate"]) == (False, 0.5)
            created = await api.post("/v1/sandboxes", headers={"Idempotency-Key": "kept-1"},
                                     json={"email": "kept@example.com", "country": "US"})
            assert created.status_code == 201, created.text
            sandbox_id = created.json()["id"]
            claimed = await control.post(f"/_emulator/sandboxes/{sandbox_id}/claim", json={"into": "new"})
            assert claimed.status_code == 200, claimed.text
            attempts = (await control.get("/_emulator/webhook_attempts")).json()["data"]
            assert attempts and {a["outcome"] for a in attempts} == {"dropped"}
    state_file = settings.data_dir / EMULATOR_STATE_FILE
    assert state_file.stat().st_mode & 0o777 == 0o600

    async with running_service(settings, EmulatorOptions(keep_state=True)) as info:
        api, control = clients(info)
        async with api, control:
            again = (await control.get(f"/_emulator/sandboxes/{sandbox_id}")).json()
            assert (again["status"], again["owner_details"]["app_install_status"]) == ("claimed", "pending_onboarding")
            assert (await control.get("/_emulator/config")).json()["delivery_enabled"] is True
            async with StripeApi(info.settings) as stripe:
                events = (await stripe.list_events({"object_id": sandbox_id}))["data"]
            assert {e["type"] for e in events} == {"v2.core.claimable_sandbox.created",
                                                   "v2.core.claimable_sandbox.claimed"}

    async with running_service(settings, EmulatorOptions()) as info:
        _, control = clients(info)
        async with control:
            assert (await control.get(f"/_emulator/sandboxes/{sandbox_id}")).status_code == 404


def test_run_refuses_an_unknown_emulator_option() -> None:
    """A typo in --emulator-option stops `processor run` before anything starts, naming the option."""
    assert emulator_knobs(["delivery_enabled=false", "reorder_window_s=2.5"]) == {
        "delivery_enabled": False, "reorder_window_s": 2.5}
    for bad in (["delivery_enabld=false"], ["duplicate_rate=2"], ["noequals"]):
        with pytest.raises(ConfigError, match="--emulator-option"):
            emulator_knobs(bad)
