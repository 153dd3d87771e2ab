"""Webhook delivery: signatures the official SDK accepts, retries, rotation, delivery off, duplicates, order."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import stripe

from processor.dev.emulator import EmulatorConfig, Knobs, running_emulator
from tests.support.emulator_client import api_client
from tests.support.emulator_receiver import running_receiver

CREATE = {
    "enable_mcp_access": False,
    "prefill": {"email": "jenny@example.com", "country": "DE"},
    "onboarding_link_details": {"refresh_url": "https://platform.example/refresh"},
}
FAST = Knobs(rate_limit_rps=0, retry_base_s=0.05, retry_max_s=0.2)


def verifies(body: bytes, signature: str, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, signature, secret, tolerance=300)
    except stripe.SignatureVerificationError:
        return False
    return True


async def test_thin_event_is_signed_and_shaped_like_stripe() -> None:
    """A created sandbox reaches the endpoint as a thin event that the SDK's verifier accepts."""
    async with running_receiver() as receiver, running_emulator(EmulatorConfig(knobs=FAST)) as emu:
        endpoint = emu.add_webhook_endpoint(receiver.url, "whsec_test_secret_one")
        async with api_client(emu) as api:
            sandbox = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
        await emu.wait_for_deliveries(10)
    [delivery] = receiver.deliveries
    assert verifies(delivery.body, delivery.signature, endpoint.secret)
    assert not verifies(delivery.body, delivery.signature, "whsec_some_other_secret")
    event = json.loads(delivery.body)
    assert event["object"] == "v2.core.event" and event["id"].startswith("evt_")
    assert event["type"] == "v2.core.claimable_sandbox.created" and event["livemode"] is False
    assert event["related_object"] == {
        "id": sandbox["id"],
        "type": "v2.core.claimable_sandbox",
        "url": f"/v2/core/claimable_sandboxes/{sandbox['id']}",
    }
    assert event["context"] == sandbox["sandbox_details"]["account"]


async def test_failed_delivery_is_retried_with_backoff_and_inspectable() -> None:
    """Two 500s then a 200: three attempts recorded, spaced by a growing delay."""
    answers = iter([500, 500, 200])

    async def flaky(body: bytes, signature: str) -> int:
        return next(answers)

    async with running_receiver(flaky) as receiver, running_emulator(EmulatorConfig(knobs=FAST)) as emu:
        emu.add_webhook_endpoint(receiver.url, "whsec_x")
        async with api_client(emu) as api:
            await api.post("/v2/core/claimable_sandboxes", json=CREATE)
            await emu.wait_for_deliveries(10)
            attempts = (await api.get("/_emulator/webhook_attempts")).json()["data"]
    assert [d.status for d in receiver.deliveries] == [500, 500, 200]
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "succeeded", 200),
    ]
    assert 0 < attempts[0]["next_retry_in_s"] < attempts[1]["next_retry_in_s"]
    assert attempts[1]["started_at"] - attempts[0]["started_at"] >= 0.04


async def test_rotation_signs_with_both_secrets_until_the_roll_ends() -> None:
    """During a roll both secrets verify; once the old one expires only the new one does."""
    async with running_receiver() as receiver, running_emulator(EmulatorConfig(knobs=FAST)) as emu:
        endpoint = emu.add_webhook_endpoint(receiver.url, "whsec_old")
        emu.roll_secret(endpoint.id, timedelta(hours=1), "whsec_new")
        async with api_client(emu) as api:
            await api.post("/v2/core/claimable_sandboxes", json=CREATE)
            await emu.wait_for_deliveries(10)
            emu.advance_clock(timedelta(hours=2))
            await api.post("/v2/core/claimable_sandboxes", json=CREATE)
            await emu.wait_for_deliveries(10)
    during, after = receiver.deliveries
    assert during.signature.count("v1=") == 2
    assert verifies(during.body, during.signature, "whsec_old") and verifies(during.body, during.signature, "whsec_new")
    assert after.signature.count("v1=") == 1
    assert verifies(after.body, after.signature, "whsec_new") and not verifies(after.body, after.signature, "whsec_old")


async def test_delivery_off_drops_events_that_the_events_api_still_has() -> None:
    """With delivery off nothing is sent, attempts show 'dropped', and GET /v2/core/events recovers them."""
    async with running_receiver() as receiver, running_emulator(EmulatorConfig(knobs=FAST)) as emu:
        emu.add_webhook_endpoint(receiver.url, "whsec_x")
        async with api_client(emu) as api:
            assert (await api.post("/_emulator/delivery", json={"enabled": False})).json() == {"enabled": False}
            sandbox = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
            await emu.wait_for_deliveries(10)
            attempts = (await api.get("/_emulator/webhook_attempts")).json()["data"]
            recovered = (await api.get("/v2/core/events", params={"object_id": sandbox["id"]})).json()["data"]
            await api.post("/_emulator/delivery", json={"enabled": True})
            await api.post(f"/_emulator/sandboxes/{sandbox['id']}/claim", json={"into": "new"})
            await emu.wait_for_deliveries(10)
    assert [a["outcome"] for a in attempts] == ["dropped"]
    assert [e["type"] for e in recovered] == ["v2.core.claimable_sandbox.created"]
    assert [json.loads(d.body)["type"] for d in receiver.deliveries] == ["v2.core.claimable_sandbox.claimed"]


async def test_duplicate_and_reorder_knobs_take_effect() -> None:
    """With duplicates and a reorder window on, some events arrive twice and some out of creation order."""
    knobs = Knobs(rate_limit_rps=0, duplicate_rate=0.5, reorder_window_s=0.3)
    async with running_receiver() as receiver, running_emulator(EmulatorConfig(knobs=knobs, seed=7)) as emu:
        emu.add_webhook_endpoint(receiver.url, "whsec_x")
        async with api_client(emu) as api:
            for _ in range(30):
                await api.post("/v2/core/claimable_sandboxes", json=CREATE)
            await emu.wait_for_deliveries(10)
            created_order = [e["id"] for e in reversed((await api.get("/v2/core/events?limit=100")).json()["data"])]
    ids = [json.loads(d.body)["id"] for d in receiver.deliveries]
    counts = Counter(ids)
    assert set(counts) == set(created_order)
    assert any(n > 1 for n in counts.values())
    first_seen = list(dict.fromkeys(ids))
    assert first_seen != created_order


async def test_unreachable_endpoint_gives_up_after_max_attempts() -> None:
    """An endpoint that refuses connections is tried max_attempts times, each failure recorded."""
    knobs = Knobs(rate_limit_rps=0, retry_base_s=0.01, retry_max_s=0.02, max_attempts=3)
    async with running_emulator(EmulatorConfig(knobs=knobs)) as emu:
        emu.add_webhook_endpoint("http://127.0.0.1:9/webhooks", "whsec_x")
        async with api_client(emu) as api:
            await api.post("/v2/core/claimable_sandboxes", json=CREATE)
        await emu.wait_for_deliveries(10)
        attempts = emu.attempts()
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert all(a.error for a in attempts)
