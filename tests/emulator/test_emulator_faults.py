"""Fault knobs: a Stripe-like rate limit, injected 429/500 with Stripe-Should-Retry, API latency."""

from __future__ import annotations

import asyncio
import time

import httpx

from processor.dev.emulator import EmulatorConfig, Knobs, running_emulator
from tests.support.emulator_client import api_client


async def test_default_rate_limit_is_25_per_second() -> None:
    """A burst of 60 requests gets the first 25 through and 429s (type rate_limit) for most of the rest."""
    async with running_emulator() as emu:
        async with api_client(emu) as api:
            responses = await asyncio.gather(*(api.get("/v2/core/events") for _ in range(60)))
    statuses = [r.status_code for r in responses]
    # tokens refill at 25/s while the burst is in flight, so a few more than 25 may pass on a slow machine
    assert 25 <= statuses.count(200) <= 45
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(r.json()["error"]["type"] == "rate_limit" for r in limited)


async def test_injected_errors_say_retry_and_control_stays_up() -> None:
    """With error rate 1 every API call fails with 429 or 500 and Stripe-Should-Retry: true."""
    knobs = Knobs(rate_limit_rps=0, api_error_rate=1.0)
    async with running_emulator(EmulatorConfig(knobs=knobs, seed=3)) as emu:
        async with api_client(emu) as api:
            responses = [await api.get("/v2/core/events") for _ in range(20)]
            control = await api.get("/_emulator/healthz")
            await api.post("/_emulator/config", json={"api_error_rate": 0})
            healed = await api.get("/v2/core/events")
    assert {r.status_code for r in responses} == {429, 500}
    assert all(r.headers["Stripe-Should-Retry"] == "true" for r in responses)
    assert control.status_code == 200 and healed.status_code == 200


async def test_api_latency_knob_slows_answers() -> None:
    """api_latency_s delays every API answer by at least that long."""
    async with running_emulator(EmulatorConfig(knobs=Knobs(api_latency_s=0.2))) as emu:
        async with api_client(emu) as api:
            started = time.monotonic()
            response = await api.get("/v2/core/events")
    assert response.status_code == 200 and time.monotonic() - started >= 0.2


async def test_bad_knob_values_are_refused() -> None:
    """The config endpoint rejects unknown knobs and out-of-range values and keeps the old ones."""
    async with running_emulator() as emu, httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as api:
        unknown = await api.post("/_emulator/config", json={"speed": 11})
        bad = await api.post("/_emulator/config", json={"duplicate_rate": 2})
        current = (await api.get("/_emulator/config")).json()
    assert unknown.status_code == 400 and bad.status_code == 400
    assert current["duplicate_rate"] == 0 and current["rate_limit_rps"] == 25


async def test_request_counts_per_key_need_the_control_token() -> None:
    """The emulator counts each key's requests by operation and its 429s; only the control token reads them."""
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=5))) as emu:
        async with api_client(emu) as api:
            responses = await asyncio.gather(*(api.get("/v2/core/events") for _ in range(8)))  # a burst of 8
            async with httpx.AsyncClient(base_url=emu.base_url) as stranger:
                refused = await stranger.get("/_emulator/requests")
            report = (await api.get("/_emulator/requests")).json()
    limited = sum(r.status_code == 429 for r in responses)
    assert limited > 0
    assert refused.status_code in (401, 403)
    [key] = report["keys"]
    assert emu.api_key not in str(report)
    assert key["requests"] == 8 and key["by_operation"] == {"list_events": 8}
    assert key["rate_limited"] == limited
    assert key["peak_per_second"] >= 6
