"""Request deadlines checked by one periodic sweep: they fire, they tell their own cancellation apart, and an
idle app keeps no timer."""

from __future__ import annotations

import asyncio
import time

import pytest

from processor.ingress.deadlines import Deadlines


async def guarded(deadlines: Deadlines, seconds: float, work: float) -> str:
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(task, seconds)
    try:
        await asyncio.sleep(work)
    except asyncio.CancelledError:
        if deadlines.expired(task):
            return "late"
        raise
    finally:
        deadlines.stop(task)
    return "done"


async def test_a_task_past_its_deadline_is_told_so_and_carries_on() -> None:
    """A task that outlives its deadline gets a cancellation it recognises, and can still finish (no pending
    cancel left); a task within its deadline is untouched."""
    deadlines = Deadlines(resolution_s=0.02)
    started = time.monotonic()
    results = await asyncio.gather(guarded(deadlines, 0.1, 5.0), guarded(deadlines, 1.0, 0.05))
    elapsed = time.monotonic() - started
    assert results == ["late", "done"]
    assert 0.1 <= elapsed < 1.0
    # an uncancelled task can await again after its deadline fired
    assert await guarded(deadlines, 0.05, 0.2) == "late"
    await asyncio.sleep(0.01)


async def test_someone_elses_cancellation_propagates() -> None:
    """A shutdown's cancellation is not mistaken for a deadline."""
    deadlines = Deadlines(resolution_s=0.02)
    task = asyncio.create_task(guarded(deadlines, 10.0, 10.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_sweep_stops_when_no_deadline_is_pending() -> None:
    """No timer keeps running for an idle app."""
    deadlines = Deadlines(resolution_s=0.01)
    assert await guarded(deadlines, 1.0, 0.0) == "done"
    await asyncio.sleep(0.05)
    assert deadlines._sweeping is None
