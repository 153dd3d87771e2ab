"""POST/GET /v1/sandboxes over real HTTP, against real PostgreSQL and the emulator."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from processor.db.pool import Database
from processor.settings import Settings
from tests.support.api_harness import OTHER_TOKEN, TOKEN, api_stack


async def test_requests_without_a_valid_token_are_refused(pg_settings: Settings, database: Database) -> None:
    """No token, a wrong token or another scheme gets 401 JSON, and nothing is created."""
    async with api_stack(pg_settings, database) as stack:
        async with httpx.AsyncClient(base_url=stack.url) as anonymous:
            attempts = [
                await anonymous.post("/v1/sandboxes", json={}, headers={"Idempotency-Key": "k"}),
                await anonymous.get("/v1/sandboxes"),
                await anonymous.get("/v1/sandboxes/csb_x", headers={"Authorization": f"Bearer {TOKEN}x"}),
                await anonymous.get("/v1/sandboxes", headers={"Authorization": f"Basic {TOKEN}"}),
                await anonymous.get("/v1/sandboxes", headers={"Authorization": "Bearer"}),
            ]
        for response in attempts:
            assert response.status_code == 401
            assert response.json()["code"] == "unauthorized"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in response.text
        assert stack.emu.state.store.sandboxes == {}
        ok = await stack.client.get("/v1/sandboxes")
        assert ok.status_code == 200


async def test_create_returns_link_and_keys_and_registers_unclaimed_once(
    pg_settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A create answers 201 with a working link and keys, stores `unclaimed` once, and logs no key."""
    caplog.set_level(logging.DEBUG)
    async with api_stack(pg_settings, database) as stack:
        response = await stack.create("order-1", name="Ada")
        assert response.status_code == 201, response.text
        body = response.json()
        sandbox = stack.emu.state.store.sandbox(body["id"])
        assert sandbox is not None
        assert body["state"] == "unclaimed"
        assert response.headers["location"] == f"/v1/sandboxes/{body['id']}"
        assert response.headers["cache-control"] == "no-store"
        # the link we hand out is the sandbox's current one, and Stripe sends expired links back to our URL
        assert body["onboarding_url"] == sandbox.link_url
        assert sandbox.refresh_url == body["refresh_url"]
        assert body["refresh_url"].startswith(f"{stack.url}/sandboxes/{body['id']}/onboarding?sig=")
        keys = body["api_keys"]
        assert keys["secret"].startswith("sk_test_") and keys["publishable"].startswith("pk_test_")

        async with database.pool.acquire() as conn:
            events = await stack.stripe.list_events({"object_id": body["id"]})
            created_event = next(e for e in events["data"] if e["type"].endswith(".created"))
            history = await conn.fetch("SELECT * FROM sandbox_history WHERE sandbox_id = $1", body["id"])
            outbox = await conn.fetch("SELECT topic, message_id FROM outbox WHERE key = $1", body["id"].encode())
            processed = await conn.fetchval(
                "SELECT outcome FROM processed_events WHERE event_id = $1", created_event["id"]
            )
            stored = await conn.fetchval(
                "SELECT count(*) FROM sandbox_create_requests WHERE sandbox_id = $1", body["id"]
            )
            rows = []
            for table in ("sandboxes", "sandbox_history", "outbox", "sandbox_create_requests"):
                rows += await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 (fixed table names)
            everything = " ".join(str(value) for row in rows for value in row.values())
        # the transition is published once, through the outbox, reported by Stripe's own `.created` event...
        assert [(h["kind"], h["to_state"], h["observed"], h["event_id"]) for h in history] == [
            ("transition", "unclaimed", True, created_event["id"])
        ]
        assert sorted(r["topic"].split(".", 1)[1] for r in outbox) == ["sandbox.state", "sandbox.transitions"]
        # ...which is marked processed, so its webhook will be a no-op for the consumer
        assert processed == "applied"
        assert stored == 1
        # the one-time keys are nowhere: not in the database, not in any log line
        for secret in keys.values():
            if secret:
                assert secret not in everything
                assert all(secret not in record.getMessage() for record in caplog.records)
        assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_retried_create_returns_the_same_sandbox(pg_settings: Settings, database: Database) -> None:
    """Same Idempotency-Key: same sandbox, link and keys; other key or other caller: a new sandbox."""
    async with api_stack(pg_settings, database) as stack:
        first = await stack.create("order-7")
        again = await stack.create("order-7")
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert len(stack.emu.state.store.sandboxes) == 1

        other_key = await stack.create("order-8")
        other_caller = await stack.client.post(
            "/v1/sandboxes",
            json={"email": "dev@platform.test", "country": "us"},
            headers={"Idempotency-Key": "order-7", "Authorization": f"Bearer {OTHER_TOKEN}"},
        )
        ids = {first.json()["id"], other_key.json()["id"], other_caller.json()["id"]}
        assert len(ids) == 3 == len(stack.emu.state.store.sandboxes)

        racing = await asyncio.gather(*(stack.create("order-9") for _ in range(3)))
        assert [r.status_code for r in racing] == [201, 201, 201]
        assert len({r.json()["id"] for r in racing}) == 1
        assert len(stack.emu.state.store.sandboxes) == 4

        reused = await stack.create("order-7", country="FR")
        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"
        transitions = await database.pool.fetchval("SELECT count(*) FROM sandbox_history WHERE kind = 'transition'")
        assert transitions == 4


async def test_bad_create_requests_get_400_or_422(pg_settings: Settings, database: Database) -> None:
    """A missing key or non-JSON body is 400, invalid fields 422 naming the field; nothing reaches Stripe."""
    async with api_stack(pg_settings, database) as stack:
        no_key = await stack.client.post("/v1/sandboxes", json={"email": "a@b.test", "country": "US"})
        assert (no_key.status_code, no_key.json()["code"]) == (400, "idempotency_key_required")
        not_json = await stack.client.post("/v1/sandboxes", content=b"{nope", headers={"Idempotency-Key": "k1"})
        assert (not_json.status_code, not_json.json()["code"]) == (400, "invalid_json")
        for body, param in [
            ({"email": "not-an-email"}, "email"),
            ({"country": "USA"}, "country"),
            ({"app_channel": "beta"}, "app_channel"),
            ({"enable_mcp_access": "yes"}, "enable_mcp_access"),
            ({"colour": "blue"}, "colour"),
        ]:
            response = await stack.create(f"bad-{param}", **body)
            assert response.status_code == 422, body
            assert response.json()["param"] == param
        assert stack.emu.state.store.sandboxes == {}


async def test_retrieve_shows_state_stripe_fields_and_history(pg_settings: Settings, database: Database) -> None:
    """GET /v1/sandboxes/{id} shows the state, Stripe's fields and every step, inferred ones included; 404 else."""
    async with api_stack(pg_settings, database) as stack:
        sandbox_id = (await stack.create("h-1")).json()["id"]
        # the user claims into a new account and installs the app; we only hear about the end (live)
        stack.emu.state.sandboxes.claim(sandbox_id, "new")
        stack.emu.state.sandboxes.submit_application(sandbox_id)
        stack.emu.state.sandboxes.install_app(sandbox_id)
        await stack.observe(sandbox_id)

        response = await stack.client.get(f"/v1/sandboxes/{sandbox_id}")
        assert response.status_code == 200
        body = response.json()
        assert body["state"] == "live"
        assert body["stripe"]["status"] == "live"
        assert body["stripe"]["owner_account"].startswith("acct_")
        steps = [(h["to_state"], h["observed"]) for h in body["history"] if h["kind"] == "transition"]
        # first and last reported by Stripe events, the states between them inferred by the lifecycle
        assert steps[0] == ("unclaimed", True) and steps[-1] == ("live", True)
        assert len(steps) >= 4 and all(not observed for _, observed in steps[1:-1])
        assert ("claimed", False) in steps and ("installed", False) in steps
        assert body["anomalies"] == []
        assert body["refresh_url"].startswith(f"{stack.url}/sandboxes/{sandbox_id}/onboarding?sig=")

        missing = await stack.client.get("/v1/sandboxes/csb_doesnotexist")
        assert (missing.status_code, missing.json()["code"]) == (404, "sandbox_not_found")


async def test_list_pages_through_every_sandbox_and_filters_by_state(pg_settings: Settings, database: Database) -> None:
    """Pages of 2 return all 5 sandboxes once, newest first; `state=expired` returns only the expired ones."""
    async with api_stack(pg_settings, database) as stack:
        created = [(await stack.create(f"list-{i}")).json()["id"] for i in range(5)]
        for sandbox_id in created[1:3]:
            stack.emu.state.sandboxes.expire(sandbox_id)
            await stack.observe(sandbox_id)

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await stack.client.get("/v1/sandboxes", params=params)).json()
            pages += 1
            assert len(page["data"]) <= 2
            seen += [s["id"] for s in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(created))
        assert pages == 3

        expired = (await stack.client.get("/v1/sandboxes", params={"state": "expired"})).json()
        assert {s["id"] for s in expired["data"]} == set(created[1:3])
        assert all(s["state"] == "expired" for s in expired["data"])
        first_expired = (await stack.client.get("/v1/sandboxes", params={"state": "expired", "limit": 1})).json()
        rest = (
            await stack.client.get(
                "/v1/sandboxes", params={"state": "expired", "limit": 1, "cursor": first_expired["next_cursor"]}
            )
        ).json()
        assert [s["id"] for s in first_expired["data"] + rest["data"]] == [created[2], created[1]]
        assert rest["next_cursor"] is None

        for params, code in [
            ({"state": "floating"}, "invalid_state"),
            ({"limit": "0"}, "invalid_limit"),
            ({"limit": "1001"}, "invalid_limit"),
            ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ]:
            response = await stack.client.get("/v1/sandboxes", params=params)
            assert (response.status_code, response.json()["code"]) == (400, code)
