"""Applying a batch does not hold the event loop for the whole batch: the next batch's Stripe fetches, prepared
meanwhile, keep the key's budget busy (a backlog drained at a third of the budget's rate while each 2,000-event
batch was decided in one go). Real PostgreSQL; the statechart walk is observed, not replaced."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from processor import constants as c
from processor.consumer import applier as applier_module
from processor.consumer.applier import DECIDE_SLICE, Applier, Observation
from processor.consumer.inbound import Action, Inbound
from processor.db.pool import Database
from processor.eventlog.base import Record
from processor.lifecycle import observed_state
from processor.settings import Settings

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _live(sandbox_id: str) -> Observation:
    """A sandbox we never saw, fetched live: deciding it walks the statechart through several states."""
    fetched: dict[str, Any] = {
        "id": sandbox_id,
        "status": "live",
        "owner_details": {"app_install_status": "installed", "account": f"acct_owner_{sandbox_id}"},
        "sandbox_details": {"account": f"acct_sandbox_{sandbox_id}"},
    }
    record = Record("t", 0, 0, sandbox_id.encode(), b"{}", (), 0)
    event = Inbound(record, f"evt_{sandbox_id}", "v2.core.claimable_sandbox.updated", Action.OBSERVE, sandbox_id,
                    None, T0)  # fmt: skip
    return Observation(sandbox_id, [event], fetched, observed_state(fetched))


async def test_other_tasks_run_between_slices_of_a_big_batch(
    pg_settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace: list[str] = []
    real_walk = applier_module.walk

    def traced_walk(*args: Any, **kwargs: Any) -> int:
        trace.append("walk")
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(applier_module, "walk", traced_walk)

    async def other_task() -> None:  # stands for the fetches of the batch being prepared
        while True:
            trace.append("turn")
            await asyncio.sleep(0)

    count = 3 * DECIDE_SLICE + 5
    applier = Applier(database.pool, pg_settings.topic(c.TOPIC_TRANSITIONS), pg_settings.topic(c.TOPIC_STATE))
    other = asyncio.create_task(other_task())
    try:
        result = await applier.apply([_live(f"clmsbx_test_slice_{n:03d}") for n in range(count)], [], [])
    finally:
        other.cancel()
    assert result.outcomes == {"applied": count}
    assert trace.count("walk") == count
    longest = max(len(run) for run in "".join("w" if t == "walk" else " " for t in trace).split())
    assert longest <= DECIDE_SLICE, f"{longest} sandboxes decided without the event loop turning once"
