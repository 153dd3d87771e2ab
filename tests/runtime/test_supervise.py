"""The supervisor of `processor run`'s worker: restarts after failures, stops when asked (pure logic)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from processor.runtime.supervise import supervise


async def test_a_failing_run_is_restarted_until_it_runs_and_stops_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    """Two runs fail; the third runs until `stop`. Each run gets its own stop event, so the first run setting
    it on its way out (as run_worker does) does not stop the third; `stop` ends the third and the supervisor."""
    stop = asyncio.Event()
    runs: list[asyncio.Event] = []
    restarts: list[int] = []
    third_running = asyncio.Event()

    async def worker(run_stop: asyncio.Event) -> None:
        runs.append(run_stop)
        if len(runs) <= 2:
            run_stop.set()  # run_worker sets its stop event in `finally`
            raise RuntimeError(f"crash {len(runs)}")
        third_running.set()
        await run_stop.wait()

    with caplog.at_level(logging.WARNING, logger="processor.runtime.supervise"):
        supervisor = asyncio.create_task(
            supervise("worker", worker, stop, on_restart=lambda: restarts.append(1), base_s=0.01, max_s=0.05))
        await asyncio.wait_for(third_running.wait(), 10)
        assert not supervisor.done()
        stop.set()
        await asyncio.wait_for(supervisor, 10)
    assert len(runs) == 3 and len(restarts) == 2
    assert runs[2].is_set()
    assert sum("worker failed" in r.getMessage() for r in caplog.records) == 2
    assert any(r.exc_info and "crash 1" in str(r.exc_info[1]) for r in caplog.records)


async def test_a_run_that_ends_on_its_own_is_restarted_and_stop_during_the_backoff_ends_at_once() -> None:
    """A run that returns although nobody asked is restarted too; a stop while waiting to restart is obeyed
    without waiting out the backoff."""
    stop = asyncio.Event()
    ended = asyncio.Event()

    async def worker(run_stop: asyncio.Event) -> None:
        ended.set()

    supervisor = asyncio.create_task(supervise("worker", worker, stop, base_s=3600, max_s=3600))
    await asyncio.wait_for(ended.wait(), 10)
    await asyncio.sleep(0)  # the supervisor is now in its backoff (up to an hour)
    stop.set()
    await asyncio.wait_for(supervisor, 5)
