"""`processor run` goes on when the database drops its consumer's connection in the middle of a commit."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncpg
import httpx
from test_service_emulator import running_service

from processor.runtime.serving import free_port
from processor.settings import Settings


async def state_of(api: httpx.AsyncClient, sandbox_id: str, want: str, timeout_s: float = 60.0) -> None:
    """Wait until GET /v1/sandboxes/{id} says `want` (the consumer applied Stripe's state)."""
    deadline = time.monotonic() + timeout_s
    while (await api.get(f"/v1/sandboxes/{sandbox_id}")).json().get("state") != want:
        assert time.monotonic() < deadline, f"{sandbox_id} never reached {want}"
        await asyncio.sleep(0.2)


async def test_processor_run_keeps_going_after_its_consumers_commit_is_killed(
    tmp_path: Path, pg_settings: Settings, pg_dsn: str
) -> None:
    """The consumer's connection is terminated while it commits; the process keeps serving, /readyz is green
    again and a sandbox claimed afterwards reaches its state."""
    port = free_port()
    settings = dataclasses.replace(pg_settings, data_dir=tmp_path / "var", port=port,
                                   public_url=f"http://127.0.0.1:{port}")
    async with running_service(settings) as info:
        token = info.settings.api_tokens[0].reveal()
        async with (
            httpx.AsyncClient(base_url=info.base_url, headers={"Authorization": f"Bearer {token}"},
                              timeout=30) as api,
            httpx.AsyncClient(base_url=info.emulator_url or "", timeout=30,
                              headers={"X-Emulator-Token": info.emulator_token or ""}) as control,
        ):
            async def claimed_sandbox(key: str) -> str:
                created = await api.post("/v1/sandboxes", headers={"Idempotency-Key": key},
                                         json={"email": f"{key}@example.com", "country": "US"})
                assert created.status_code == 201, created.text
                sandbox_id = str(created.json()["id"])
                await control.post(f"/_emulator/sandboxes/{sandbox_id}/claim", json={"into": "new"})
                return sandbox_id

            await state_of(api, await claimed_sandbox("first"), "pending_onboarding")
            blocker, watcher = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
            try:
                lock = blocker.transaction()
                await lock.start()
                await blocker.execute("LOCK TABLE log_group_offsets IN EXCLUSIVE MODE")  # commits wait
                second = await claimed_sandbox("second")
                deadline = time.monotonic() + 60
                while (pid := await watcher.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO log_group_offsets%'")) is None:
                    assert time.monotonic() < deadline, "the consumer never came to commit"
                    await asyncio.sleep(0.05)
                assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
                await lock.rollback()
            finally:
                await blocker.close()
                await watcher.close()
            await state_of(api, second, "pending_onboarding")
            await state_of(api, await claimed_sandbox("third"), "pending_onboarding")
            ready = await api.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
