"""Dashboard-side control endpoints drive sandboxes through every path and emit Stripe's events."""

from __future__ import annotations

from datetime import timedelta

import httpx

from processor.dev.emulator import RunningEmulator

CREATE = {
    "enable_mcp_access": False,
    "prefill": {"email": "jenny@example.com", "country": "DE"},
    "onboarding_link_details": {"refresh_url": "https://platform.example/refresh"},
}


async def new_sandbox(api: httpx.AsyncClient) -> str:
    response = await api.post("/v2/core/claimable_sandboxes", json=CREATE)
    return str(response.json()["id"])


async def event_types(api: httpx.AsyncClient, sandbox_id: str) -> list[str]:
    events = (await api.get("/v2/core/events", params={"object_id": sandbox_id, "limit": 100})).json()["data"]
    return [e["type"].rsplit(".", 1)[1] for e in reversed(events)]


async def test_new_account_path_goes_live(api: httpx.AsyncClient) -> None:
    """Claim into a new account, submit the application, install the app: pending states, then live."""
    sid = await new_sandbox(api)
    claimed = (await api.post(f"/_emulator/sandboxes/{sid}/claim", json={"into": "new"})).json()
    assert claimed["status"] == "claimed" and claimed["claimed_at"] and claimed["expires_at"] is None
    assert claimed["owner_details"] == {"account": None, "app_install_status": "pending_onboarding"}
    submitted = (await api.post(f"/_emulator/sandboxes/{sid}/submit_application")).json()
    assert submitted["owner_details"]["app_install_status"] == "pending_install"
    live = (await api.post(f"/_emulator/sandboxes/{sid}/install_app")).json()
    assert live["status"] == "live" and live["owner_details"]["app_install_status"] == "installed"
    assert live["owner_details"]["account"].startswith("acct_")
    assert (await api.get(f"/v2/core/claimable_sandboxes/{sid}")).json()["status"] == "live"
    assert await event_types(api, sid) == ["created", "claimed", "updated", "updated"]


async def test_existing_account_path_skips_onboarding(api: httpx.AsyncClient) -> None:
    """Claiming into an existing account lands in pending_install with that account as owner once installed."""
    sid = await new_sandbox(api)
    claimed = await api.post(
        f"/_emulator/sandboxes/{sid}/claim", json={"into": "existing", "account": "acct_1Existing0000"}
    )
    assert claimed.json()["owner_details"]["app_install_status"] == "pending_install"
    refused = await api.post(f"/_emulator/sandboxes/{sid}/submit_application")
    assert refused.status_code == 409
    installed = (await api.post(f"/_emulator/sandboxes/{sid}/install_app", json={"go_live": False})).json()
    assert installed["status"] == "claimed" and installed["owner_details"]["account"] == "acct_1Existing0000"
    live = (await api.post(f"/_emulator/sandboxes/{sid}/go_live")).json()
    assert live["status"] == "live"
    assert await event_types(api, sid) == ["created", "claimed", "updated", "updated"]


async def test_expire_only_unclaimed(api: httpx.AsyncClient) -> None:
    """An unclaimed sandbox can be expired; a claimed one cannot."""
    unclaimed, claimed = await new_sandbox(api), await new_sandbox(api)
    await api.post(f"/_emulator/sandboxes/{claimed}/claim", json={"into": "new"})
    expired = await api.post(f"/_emulator/sandboxes/{unclaimed}/expire")
    refused = await api.post(f"/_emulator/sandboxes/{claimed}/expire")
    assert expired.status_code == 200 and expired.json()["status"] == "expired"
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_state"
    renew = await api.post(f"/v2/core/claimable_sandboxes/{unclaimed}/renew_onboarding_link", json={})
    assert renew.status_code == 400
    assert await event_types(api, unclaimed) == ["created", "expired"]


async def test_clock_brings_expiring_then_expired(api: httpx.AsyncClient) -> None:
    """Moving the clock 53 days sends `.expiring`; past 60 days the sandbox expires by itself."""
    sid = await new_sandbox(api)
    await api.post("/_emulator/clock/advance", json={"days": 53.5})
    assert await event_types(api, sid) == ["created", "expiring"]
    await api.post("/_emulator/clock/advance", json={"days": 7})
    assert (await api.get(f"/v2/core/claimable_sandboxes/{sid}")).json()["status"] == "expired"
    assert await event_types(api, sid) == ["created", "expiring", "expired"]


async def test_expired_link_blocks_claim_until_renewed(api: httpx.AsyncClient, emulator: RunningEmulator) -> None:
    """After 7 days the onboarding link is dead (redirects to refresh_url); renewing it lets the user claim."""
    created = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
    sid = created["id"]
    emulator.advance_clock(timedelta(days=8))
    refused = await api.post(f"/_emulator/sandboxes/{sid}/claim", json={"into": "new"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "onboarding_link_expired"
    async with httpx.AsyncClient() as browser:
        redirect = await browser.get(created["onboarding_link_details"]["url"])
    assert redirect.status_code == 302 and redirect.headers["location"] == "https://platform.example/refresh"
    await api.post(f"/v2/core/claimable_sandboxes/{sid}/renew_onboarding_link", json={})
    assert (await api.post(f"/_emulator/sandboxes/{sid}/claim", json={"into": "new"})).status_code == 200


async def test_onboarding_page_walks_the_user_through(api: httpx.AsyncClient) -> None:
    """The onboarding URL opens a page whose buttons claim, submit and install, like the Dashboard."""
    created = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
    url = created["onboarding_link_details"]["url"]
    async with httpx.AsyncClient() as browser:
        assert "Claim into a new account" in (await browser.get(url)).text
        for action in ("claim_new", "submit_application", "install_app"):
            page = await browser.post(url, data={"action": action})
            assert page.status_code == 200
    assert (await api.get(f"/v2/core/claimable_sandboxes/{created['id']}")).json()["status"] == "live"


async def test_uninstall_emits_v1_deauthorized(api: httpx.AsyncClient) -> None:
    """Uninstalling the app sends the v1 snapshot event account.application.deauthorized for the owner."""
    sid = await new_sandbox(api)
    await api.post(f"/_emulator/sandboxes/{sid}/claim", json={"into": "existing", "account": "acct_1Owner00000000"})
    await api.post(f"/_emulator/sandboxes/{sid}/install_app")
    assert (await api.post(f"/_emulator/sandboxes/{sid}/uninstall_app")).status_code == 200
    assert (await api.post(f"/_emulator/sandboxes/{sid}/uninstall_app")).status_code == 409
    events = (await api.get("/v1/events", params={"type": "account.application.deauthorized"})).json()
    assert len(events["data"]) == 1
    event = events["data"][0]
    assert event["object"] == "event" and event["account"] == "acct_1Owner00000000"
    assert event["data"]["object"]["object"] == "application"
    assert (await api.get(f"/v1/events/{event['id']}")).json() == event
