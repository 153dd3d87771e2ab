"""The emulator's /v2 API over real sockets: shapes, auth, versions, errors, idempotency, links, events."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from processor.dev.emulator import RunningEmulator
from tests.support.emulator_client import VERSION

CREATE = {
    "app_channel": "testing",
    "enable_mcp_access": True,
    "prefill": {"email": "jenny@example.com", "country": "US", "name": "Jenny"},
    "onboarding_link_details": {"refresh_url": "https://platform.example/refresh"},
}


def ts(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


async def test_create_returns_full_object_with_keys_once(api: httpx.AsyncClient) -> None:
    """Create answers the whole sandbox with one-time API keys; a later GET has api_keys null."""
    created = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
    assert created["object"] == "v2.core.claimable_sandbox"
    assert created["id"].startswith("clmsbx_test_")
    assert created["status"] == "unclaimed" and created["owner_details"] is None and created["claimed_at"] is None
    assert created["app_channel"] == "testing" and created["livemode"] is False
    assert created["prefill"] == {"email": "jenny@example.com", "country": "US", "name": "Jenny"}
    keys = created["sandbox_details"]["api_keys"]
    assert keys["secret"].startswith("sk_test_") and keys["publishable"].startswith("pk_test_")
    assert keys["mcp"].startswith("rk_test_")
    assert created["sandbox_details"]["account"].startswith("acct_")
    assert ts(created["expires_at"]) - ts(created["created"]) == timedelta(days=60)
    link = created["onboarding_link_details"]
    assert ts(link["expires_at"]) - ts(created["created"]) == timedelta(days=7)
    assert link["refresh_url"] == "https://platform.example/refresh" and link["url"].startswith("http")

    fetched = (await api.get(f"/v2/core/claimable_sandboxes/{created['id']}")).json()
    assert fetched["sandbox_details"] == {"account": created["sandbox_details"]["account"], "api_keys": None}
    assert {k: v for k, v in fetched.items() if k != "sandbox_details"} == {
        k: v for k, v in created.items() if k != "sandbox_details"
    }


async def test_create_without_mcp_has_no_mcp_key_and_defaults_channel(api: httpx.AsyncClient) -> None:
    """app_channel defaults to public and no MCP key is issued unless asked for."""
    body = {**CREATE, "enable_mcp_access": False}
    del body["app_channel"]
    created = (await api.post("/v2/core/claimable_sandboxes", json=body)).json()
    assert created["app_channel"] == "public"
    assert created["sandbox_details"]["api_keys"]["mcp"] is None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"prefill": {"country": "US"}}, "prefill.email"),
        ({"prefill": {"email": "a@b.co"}}, "prefill.country"),
        ({"onboarding_link_details": {}}, "onboarding_link_details.refresh_url"),
        ({"enable_mcp_access": None}, "enable_mcp_access"),
    ],
)
async def test_create_rejects_missing_required_fields(
    api: httpx.AsyncClient, change: dict[str, object], param: str
) -> None:
    """Required fields missing give a Stripe-shaped 400 naming the parameter."""
    body = {**CREATE, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = await api.post("/v2/core/claimable_sandboxes", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "parameter_missing"
    assert error["param"] == param and error["message"]


async def test_auth_is_required(emulator: RunningEmulator) -> None:
    """No key or an unknown key is a 401 in Stripe's error shape."""
    async with httpx.AsyncClient(base_url=emulator.base_url, headers={"Stripe-Version": VERSION}) as client:
        missing = await client.get("/v2/core/events")
        wrong = await client.get("/v2/core/events", headers={"Authorization": "Bearer sk_test_not_the_key_at_all"})
        basic = await client.get("/v2/core/events", auth=(emulator.api_key, ""))
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong.status_code == 401 and "sk_test_not_the_key_at_all" not in wrong.text
    assert basic.status_code == 200


@pytest.mark.parametrize(
    ("version", "status"),
    [(None, 400), ("2026-10-28.endive", 400), ("2026-03-25.preview", 400), (VERSION, 200), ("2026-10-14.preview", 200)],
)
async def test_stripe_version_must_be_a_recent_preview(
    emulator: RunningEmulator, version: str | None, status: int
) -> None:
    """Only preview versions from 2026-04-22.preview on reach the v2 claimable-sandbox API."""
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    if version:
        headers["Stripe-Version"] = version
    async with httpx.AsyncClient(base_url=emulator.base_url, headers=headers) as client:
        response = await client.get("/v2/core/events")
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["code"] == "invalid_api_version"


async def test_unknown_sandbox_and_path_are_404(api: httpx.AsyncClient) -> None:
    """An unknown id or URL is a Stripe-shaped 404."""
    sandbox = await api.get("/v2/core/claimable_sandboxes/clmsbx_test_nope")
    path = await api.get("/v2/core/nothing_here")
    assert sandbox.status_code == 404 and sandbox.json()["error"]["code"] == "not_found"
    assert path.status_code == 404 and path.json()["error"]["type"] == "invalid_request_error"


async def test_idempotency_key_replays_and_rejects_other_bodies(api: httpx.AsyncClient) -> None:
    """Same key + same body returns the same sandbox once created; same key + other body is a 400."""
    first = await api.post("/v2/core/claimable_sandboxes", json=CREATE, headers={"Idempotency-Key": "k-1"})
    again = await api.post("/v2/core/claimable_sandboxes", json=CREATE, headers={"Idempotency-Key": "k-1"})
    other = await api.post(
        "/v2/core/claimable_sandboxes",
        json={**CREATE, "prefill": {"email": "x@example.com", "country": "FR"}},
        headers={"Idempotency-Key": "k-1"},
    )
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    events = (await api.get("/v2/core/events")).json()["data"]
    assert [e["type"] for e in events] == ["v2.core.claimable_sandbox.created"]
    assert events[0]["reason"]["request"]["idempotency_key"] == "k-1"


async def test_renew_link_replaces_the_old_one(api: httpx.AsyncClient) -> None:
    """Renewing gives a new link for 7 more days; the old link now sends the user to refresh_url."""
    created = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
    old_url = created["onboarding_link_details"]["url"]
    renewed = await api.post(
        f"/v2/core/claimable_sandboxes/{created['id']}/renew_onboarding_link",
        json={"onboarding_link_details": {"refresh_url": "https://platform.example/refresh2"}},
    )
    assert renewed.status_code == 200
    link = renewed.json()["onboarding_link_details"]
    assert link["url"] != old_url and link["refresh_url"] == "https://platform.example/refresh2"
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(link["url"])).status_code == 200
        stale = await browser.get(old_url)
    assert stale.status_code == 302
    assert stale.headers["location"] == "https://platform.example/refresh2"


async def test_stripe_context_must_match_the_sandbox(api: httpx.AsyncClient) -> None:
    """Reading with the sandbox's account as Stripe-Context works; a foreign account sees a 404."""
    created = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
    url = f"/v2/core/claimable_sandboxes/{created['id']}"
    own = await api.get(url, headers={"Stripe-Context": created["sandbox_details"]["account"]})
    foreign = await api.get(url, headers={"Stripe-Context": "acct_1SomebodyElse00"})
    assert own.status_code == 200 and foreign.status_code == 404


async def test_event_list_pages_and_filters_by_created(api: httpx.AsyncClient, emulator: RunningEmulator) -> None:
    """GET /v2/core/events pages newest first through every event, and `created` bounds the list."""
    for _ in range(3):
        await api.post("/v2/core/claimable_sandboxes", json=CREATE)
    cutoff = emulator.state.clock.now()
    emulator.advance_clock(timedelta(hours=1))
    for _ in range(2):
        await api.post("/v2/core/claimable_sandboxes", json=CREATE)

    seen: list[dict[str, object]] = []
    url: str | None = "/v2/core/events?limit=2"
    while url:
        page = (await api.get(url)).json()
        seen += page["data"]
        url = page["next_page_url"]
    assert len(seen) == 5 and len({e["id"] for e in seen}) == 5
    created_times = [ts(str(e["created"])) for e in seen]
    assert created_times == sorted(created_times, reverse=True)

    later = (await api.get("/v2/core/events", params={"created[gt]": cutoff.isoformat()})).json()["data"]
    assert len(later) == 2
    one = (await api.get(f"/v2/core/events/{later[0]['id']}")).json()
    assert one["object"] == "v2.core.event" and one["related_object"]["type"] == "v2.core.claimable_sandbox"
    bad = await api.get("/v2/core/events", params={"created[gt]": "yesterday"})
    assert bad.status_code == 400
