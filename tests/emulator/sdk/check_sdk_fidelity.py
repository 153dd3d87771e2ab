"""The official SDK (preview line) reads the emulator's objects, errors and webhooks as Stripe's own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import stripe
from stripe.events import (
    V2CoreClaimableSandboxClaimedEventNotification,
    V2CoreClaimableSandboxCreatedEvent,
    V2CoreClaimableSandboxCreatedEventNotification,
    V2CoreClaimableSandboxExpiredEventNotification,
    V2CoreClaimableSandboxExpiringEventNotification,
    V2CoreClaimableSandboxUpdatedEventNotification,
)
from stripe.v2.core import ClaimableSandbox

from processor.dev.emulator import EmulatorConfig, Knobs, RunningEmulator, running_emulator
from tests.support.emulator_receiver import running_receiver

PARAMS = {
    "enable_mcp_access": True,
    "prefill": {"email": "jenny@example.com", "country": "US", "name": "Jenny"},
    "onboarding_link_details": {"refresh_url": "https://platform.example/refresh"},
}
SECRET = "whsec_fidelity_secret"
THIN_TYPES = [f"v2.core.claimable_sandbox.{a}" for a in ("created", "claimed", "updated", "expiring", "expired")]


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=0))) as emu:
        yield emu


_HTTP_CLIENTS: list[stripe.HTTPXClient] = []


def sdk(emu: RunningEmulator, api_key: str | None = None) -> stripe.StripeClient:
    """A StripeClient pointed at the emulator, as the processor points it at Stripe."""
    http_client = stripe.HTTPXClient()
    _HTTP_CLIENTS.append(http_client)
    return stripe.StripeClient(
        api_key or emu.api_key,
        base_addresses={"api": emu.base_url},
        http_client=http_client,
        max_network_retries=0,
    )


@pytest.fixture(autouse=True)
async def close_http_clients() -> AsyncIterator[None]:
    yield
    while _HTTP_CLIENTS:
        http_client = _HTTP_CLIENTS.pop()
        await http_client.close_async()
        http_client.close()


async def test_sdk_version_is_a_preview_the_emulator_accepts() -> None:
    """The SDK sends its own preview version by default, and the emulator must take it."""
    assert stripe.api_version.endswith(".preview") and stripe.api_version >= "2026-04-22.preview"


async def test_created_sandbox_deserializes_into_claimable_sandbox(emulator: RunningEmulator) -> None:
    """create and retrieve return ClaimableSandbox with typed nested objects; keys only on create."""
    client = sdk(emulator)
    created = await client.v2.core.claimable_sandboxes.create_async(PARAMS)  # type: ignore[arg-type]
    assert isinstance(created, ClaimableSandbox)
    assert created.object == "v2.core.claimable_sandbox" and created.status == "unclaimed"
    assert isinstance(created.onboarding_link_details, ClaimableSandbox.OnboardingLinkDetails)
    assert created.onboarding_link_details.refresh_url == "https://platform.example/refresh"
    assert isinstance(created.prefill, ClaimableSandbox.Prefill) and created.prefill.email == "jenny@example.com"
    assert isinstance(created.sandbox_details, ClaimableSandbox.SandboxDetails)
    keys = created.sandbox_details.api_keys
    assert isinstance(keys, ClaimableSandbox.SandboxDetails.ApiKeys)
    assert keys.secret.startswith("sk_test_") and keys.publishable.startswith("pk_test_") and keys.mcp
    assert created.owner_details is None and created.claimed_at is None and created.expires_at

    fetched = await client.v2.core.claimable_sandboxes.retrieve_async(created.id)
    assert isinstance(fetched, ClaimableSandbox) and fetched.sandbox_details.api_keys is None

    async with httpx.AsyncClient(base_url=emulator.base_url, headers=emulator.control_headers) as control:
        await control.post(f"/_emulator/sandboxes/{created.id}/claim", json={"into": "new"})
    claimed = await client.v2.core.claimable_sandboxes.retrieve_async(created.id)
    assert isinstance(claimed.owner_details, ClaimableSandbox.OwnerDetails)
    assert claimed.owner_details.app_install_status == "pending_onboarding" and claimed.owner_details.account is None
    assert claimed.status == "claimed" and claimed.claimed_at and claimed.expires_at is None

    renewed = await client.v2.core.claimable_sandboxes.renew_onboarding_link_async(created.id)
    assert isinstance(renewed, ClaimableSandbox)
    assert renewed.onboarding_link_details.url != created.onboarding_link_details.url


async def test_errors_become_the_sdk_exceptions(emulator: RunningEmulator) -> None:
    """400, 401, 404, idempotency conflicts and 429 raise the SDK's matching exception classes."""
    client = sdk(emulator)
    with pytest.raises(stripe.InvalidRequestError) as bad:
        await client.v2.core.claimable_sandboxes.create_async({**PARAMS, "prefill": {"country": "US"}})  # type: ignore[arg-type]
    assert bad.value.http_status == 400 and bad.value.code == "parameter_missing"
    with pytest.raises(stripe.AuthenticationError):
        await sdk(emulator, "sk_test_wrong_key_000000").v2.core.claimable_sandboxes.retrieve_async("clmsbx_x")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v2.core.claimable_sandboxes.retrieve_async("clmsbx_test_missing")
    assert missing.value.http_status == 404
    await client.v2.core.claimable_sandboxes.create_async(PARAMS, {"idempotency_key": "same"})  # type: ignore[arg-type]
    with pytest.raises(stripe.IdempotencyError):
        await client.v2.core.claimable_sandboxes.create_async(
            {**PARAMS, "enable_mcp_access": False},  # type: ignore[arg-type]
            {"idempotency_key": "same"},
        )
    emulator.set_knobs(rate_limit_rps=1)
    with pytest.raises(stripe.RateLimitError):
        for _ in range(5):
            await client.v2.core.events.list_async()


async def test_event_list_pages_with_the_sdk(emulator: RunningEmulator) -> None:
    """auto_paging_iter walks next_page_url through every event, typed per event type."""
    client = sdk(emulator)
    for _ in range(5):
        await client.v2.core.claimable_sandboxes.create_async(PARAMS)  # type: ignore[arg-type]
    page = await client.v2.core.events.list_async({"limit": 2})
    events = [e async for e in page.auto_paging_iter()]
    assert len(events) == 5 and all(isinstance(e, V2CoreClaimableSandboxCreatedEvent) for e in events)


async def test_webhooks_parse_into_the_right_notification_classes() -> None:
    """Every lifecycle event passes parse_event_notification and fetches its sandbox and event back."""
    notifications: list[object] = []

    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=0))) as emu:
        client = sdk(emu)

        async def handle(body: bytes, signature: str) -> int:
            notifications.append(client.parse_event_notification(body, signature, SECRET))
            return 200

        async with running_receiver(handle) as receiver:
            # a thin-event destination, as on Stripe: the v1 snapshot events go to snapshot destinations
            emu.add_webhook_endpoint(receiver.url, SECRET, frozenset(THIN_TYPES))
            live = await client.v2.core.claimable_sandboxes.create_async(PARAMS)  # type: ignore[arg-type]
            lapsing = await client.v2.core.claimable_sandboxes.create_async(PARAMS)  # type: ignore[arg-type]
            async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as control:
                await control.post(f"/_emulator/sandboxes/{live.id}/claim", json={"into": "existing"})
                await control.post(f"/_emulator/sandboxes/{live.id}/install_app")
            emu.advance_clock(timedelta(days=61))
            await emu.wait_for_deliveries(10)
        assert len(receiver.deliveries) == len(notifications) == 6

        by_class = {type(n): n for n in notifications}
        assert set(by_class) == {
            V2CoreClaimableSandboxCreatedEventNotification,
            V2CoreClaimableSandboxClaimedEventNotification,
            V2CoreClaimableSandboxUpdatedEventNotification,
            V2CoreClaimableSandboxExpiringEventNotification,
            V2CoreClaimableSandboxExpiredEventNotification,
        }
        updated = by_class[V2CoreClaimableSandboxUpdatedEventNotification]
        assert isinstance(updated, V2CoreClaimableSandboxUpdatedEventNotification)
        assert str(updated.context) == live.sandbox_details.account
        sandbox = await updated.fetch_related_object_async()
        assert isinstance(sandbox, ClaimableSandbox) and sandbox.id == live.id and sandbox.status == "live"
        expired = by_class[V2CoreClaimableSandboxExpiredEventNotification]
        assert isinstance(expired, V2CoreClaimableSandboxExpiredEventNotification)
        gone = await expired.fetch_related_object_async()
        assert gone.id == lapsing.id and gone.status == "expired"
        created = by_class[V2CoreClaimableSandboxCreatedEventNotification]
        assert isinstance(created, V2CoreClaimableSandboxCreatedEventNotification)
        event = await created.fetch_event_async()
        assert isinstance(event, V2CoreClaimableSandboxCreatedEvent) and event.id == created.id
        assert json.loads(json.dumps(event.to_dict()))["related_object"]["id"] == created.related_object.id


async def test_v1_snapshot_event_verifies_with_construct_event() -> None:
    """The uninstall's account.application.deauthorized verifies with the SDK's v1 construct_event."""
    bodies: list[tuple[bytes, str]] = []

    async def keep(body: bytes, signature: str) -> int:
        bodies.append((body, signature))
        return 200

    async with (
        running_receiver(keep) as receiver,
        running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=0))) as emu,
    ):
        client = sdk(emu)
        sandbox = await client.v2.core.claimable_sandboxes.create_async(PARAMS)  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as control:
            await control.post(f"/_emulator/sandboxes/{sandbox.id}/claim", json={"into": "existing"})
            await control.post(f"/_emulator/sandboxes/{sandbox.id}/install_app")
            emu.add_webhook_endpoint(receiver.url, SECRET)
            await control.post(f"/_emulator/sandboxes/{sandbox.id}/uninstall_app")
        await emu.wait_for_deliveries(10)
    [(body, signature)] = bodies
    event = stripe.Webhook.construct_event(body.decode(), signature, SECRET)
    assert event.type == "account.application.deauthorized" and event.account.startswith("acct_")
