"""Done-when of the emulator issue: 100 sandboxes through the SDK, every path, every event seen and verified."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from datetime import timedelta

import httpx
import stripe
from stripe.v2.core import ClaimableSandbox

from processor.dev.emulator import EmulatorConfig, Knobs, running_emulator
from tests.support.emulator_receiver import running_receiver

SECRET = "whsec_done_when_secret"
PATHS = {
    "new": ["created", "claimed", "updated", "updated"],
    "existing": ["created", "claimed", "updated"],
    "expiry": ["created", "expiring", "expired"],
}


async def test_hundred_sandboxes_every_path_every_event_seen() -> None:
    """Each v2 event reaches a verifying receiver at least once; duplicates and reordering do happen."""
    started = time.monotonic()
    seen: list[tuple[str, str, str]] = []  # (event id, type, sandbox id) in arrival order
    snapshots: list[str] = []
    knobs = Knobs(rate_limit_rps=0, duplicate_rate=0.3, reorder_window_s=0.25, retry_base_s=0.05)
    http_client = stripe.HTTPXClient()
    async with running_emulator(EmulatorConfig(knobs=knobs, seed=2026)) as emu:
        client = stripe.StripeClient(emu.api_key, base_addresses={"api": emu.base_url}, http_client=http_client)

        async def verify(body: bytes, signature: str) -> int:
            if json.loads(body)["object"] == "event":  # v1 snapshot event (the app install)
                snapshots.append(stripe.Webhook.construct_event(body.decode(), signature, SECRET).id)
                return 200
            notification = client.parse_event_notification(body, signature, SECRET)
            seen.append((notification.id, notification.type, notification.related_object.id))  # type: ignore[union-attr]
            return 200

        async with running_receiver(verify) as receiver:
            emu.add_webhook_endpoint(receiver.url, SECRET)
            created = await asyncio.gather(
                *(
                    client.v2.core.claimable_sandboxes.create_async(
                        {
                            "enable_mcp_access": i % 2 == 0,
                            "prefill": {"email": f"user{i}@example.com", "country": "US"},
                            "onboarding_link_details": {"refresh_url": f"https://platform.example/r/{i}"},
                        },
                        {"idempotency_key": f"create-{i}"},
                    )
                    for i in range(100)
                )
            )
            assert all(isinstance(s, ClaimableSandbox) for s in created)
            path_of = {s.id: ("new", "existing", "expiry")[i % 3] for i, s in enumerate(created)}
            async with httpx.AsyncClient(base_url=emu.base_url, headers=emu.control_headers) as control:

                async def drive(sandbox_id: str, path: str) -> None:
                    steps = {
                        "new": [("claim", {"into": "new"}), ("submit_application", {}), ("install_app", {})],
                        "existing": [("claim", {"into": "existing"}), ("install_app", {})],
                        "expiry": [],
                    }[path]
                    for step, body in steps:
                        response = await control.post(f"/_emulator/sandboxes/{sandbox_id}/{step}", json=body)
                        assert response.status_code == 200, response.text

                await asyncio.gather(*(drive(sid, path) for sid, path in path_of.items()))
            emu.advance_clock(timedelta(days=61))
            await emu.wait_for_deliveries(30)

        # what Stripe says happened, through the SDK's own paging
        page = await client.v2.core.events.list_async({"limit": 100})
        stored = [e async for e in page.auto_paging_iter()]
        for sandbox in created[:10]:
            final = await client.v2.core.claimable_sandboxes.retrieve_async(sandbox.id)
            assert final.status == {"new": "live", "existing": "live", "expiry": "expired"}[path_of[sandbox.id]]
    await http_client.close_async()

    expected = {e.id for e in stored}
    assert len(stored) == sum(len(PATHS[p]) for p in path_of.values())
    assert {event_id for event_id, _, _ in seen} == expected  # every event at least once
    counts = Counter(event_id for event_id, _, _ in seen)
    assert sum(1 for n in counts.values() if n > 1) >= 20  # duplicates happened
    arrival = list(dict.fromkeys(event_id for event_id, _, _ in seen))
    creation = [e.id for e in reversed(stored)]
    assert arrival != creation  # reordering happened

    types_by_sandbox: dict[str, list[str]] = defaultdict(list)
    for event in reversed(stored):
        types_by_sandbox[event.related_object.id].append(event.type.rsplit(".", 1)[1])
    for sandbox_id, path in path_of.items():
        assert types_by_sandbox[sandbox_id] == PATHS[path], (sandbox_id, path)
    assert len(set(snapshots)) == sum(1 for p in path_of.values() if p != "expiry")
    assert time.monotonic() - started < 60
