"""The periodic reconciler of `processor run`: repairs dropped webhooks, stops at once, resumes from its cursor."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State
from processor.operations.reconcile import BATCH, RECONCILE_EVENT_TYPE
from processor.runtime.metrics import WorkerMetrics
from processor.runtime.reconciler import PERIODIC_CURSOR, run_reconciler
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import (
    check_paths,
    cli,
    cli_env,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    published,
    settled,
    wait_for,
    with_db,
    worker,
)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def no_cursor(dsn: str) -> bool:
    return not await query(dsn, "SELECT 1 FROM reconcile_cursors")


async def test_reconcile_repairs_stops_at_once_and_resumes_from_its_cursor(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """`processor reconcile` interrupted with Ctrl-C after a batch resumes from its own cursor when run again.
    Webhooks then dropped for 130 sandboxes: the reconciler, stopped during its second batch, ends within a
    second leaving the first batch repaired and the rest untouched; restarted, it resumes the same pass from
    its cursor and repairs the rest, publishing each sandbox's full path once; idle, it also stops at once."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, pg_log, db):
            ids = sorted(await create_sandboxes(api, BATCH + 30, "periodic"))
            await stack.emu.wait_for_deliveries(within_s=30)
            await wait_for(lambda: settled(pg_dsn, dict.fromkeys(ids, State.UNCLAIMED)), 30, "registration")
            # the command line, interrupted with Ctrl-C after its first batch, resumes where it stopped (all
            # in sync yet: this pass repairs nothing)
            slow = replace(settings, stripe_max_rps=25.0)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "processor", "reconcile", "--age", "0s", "--no-discover"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=cli_env(slow),
            )
            deadline = time.monotonic() + 30
            while not await query(pg_dsn, "SELECT 1 FROM reconcile_cursors WHERE name = 'cli'"):
                assert time.monotonic() < deadline and process.returncode is None, "no batch was saved"
                await asyncio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.communicate(), 10)
            assert process.returncode == 130
            resumed = await cli(settings, "reconcile", "--age", "0s", "--no-discover", "--json")
            report = orjson.loads(resumed.stdout)
            assert report["resumed"] and (report["checked"], report["in_sync"]) == (len(ids) - BATCH, len(ids) - BATCH)
            assert await no_cursor(pg_dsn)

            stack.emu.set_knobs(delivery_enabled=False)
            drive(stack.emu, ids)
            expected = expected_states(stack.emu, ids)
            moved = {sid for sid in ids if expected[sid] != State.UNCLAIMED}

            # Stripe's sandbox-mode rate: the first batch takes ~3 s, the second ~1 s
            async with StripeApi(slow) as slow_api:
                stop = asyncio.Event()
                task = asyncio.create_task(run_reconciler(settings, db, slow_api, 600, stop, age=timedelta(0)))
                deadline = time.monotonic() + 30
                while not await query(pg_dsn, "SELECT 1 FROM reconcile_cursors WHERE name = $1", PERIODIC_CURSOR):
                    assert time.monotonic() < deadline and not task.done(), "the first batch was never saved"
                    await asyncio.sleep(0.05)
                stop.set()
                started = time.monotonic()
                await asyncio.wait_for(task, 10)
                assert time.monotonic() - started < 0.5, "the reconciler finished its pass before stopping"
            (cursor,) = await query(pg_dsn, "SELECT run_id, last_id FROM reconcile_cursors")
            assert cursor["last_id"] == ids[BATCH - 1]
            first = {r["id"]: r["state"] for r in await query(pg_dsn, "SELECT id, state FROM sandboxes")}
            assert {sid: first[sid] for sid in ids[:BATCH]} == {sid: expected[sid] for sid in ids[:BATCH]}
            assert {first[sid] for sid in ids[BATCH:]} == {State.UNCLAIMED}

            stop = asyncio.Event()
            task = asyncio.create_task(run_reconciler(settings, db, api, 600, stop, age=timedelta(0)))
            await wait_for(lambda: settled(pg_dsn, expected), 30, "every sandbox in Stripe's state")
            await wait_for(lambda: no_cursor(pg_dsn), 30, "the pass to finish")
            # the resumed pass kept the interrupted one's id: one pass repaired every sandbox, each once
            repairs = await query(
                pg_dsn, "SELECT sandbox_id, event_id FROM processed_events WHERE event_type = $1", RECONCILE_EVENT_TYPE
            )
            assert sorted(r["sandbox_id"] for r in repairs) == sorted(moved)
            assert {r["event_id"].split("_")[1] for r in repairs} == {cursor["run_id"]}
            await asyncio.sleep(0.3)  # now idle, waiting for the next round
            stop.set()
            started = time.monotonic()
            await asyncio.wait_for(task, 10)
            assert time.monotonic() - started < 1.0
            await wait_for(lambda: settled(pg_dsn, expected), 30, "the outbox published")

        pub = await published(pg_log, settings)
        check_paths(pub, expected)
        assert pub.raw_transition_count == len(pub.transitions), "a transition was published twice"


async def test_first_pass_waits_for_the_consumer_and_every_repair_is_counted(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Started while the log holds events nobody consumed (as after a crash), the reconciler repairs nothing
    until the consumer has caught up, and then nothing needs repairing; a deauthorization lost later is repaired
    by the next pass, counted in processor_reconcile_repairs_total and logged as a warning."""
    caplog.set_level(logging.INFO, logger="processor.operations.reconcile")
    caplog.set_level(logging.INFO, logger="processor.runtime.reconciler")  # the periodic one waits, then starts
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db:
            ids = await create_sandboxes(api, 7, "catchup")
            drive(stack.emu, ids)
            await stack.emu.wait_for_deliveries(within_s=30)
            metrics = WorkerMetrics()
            stop = asyncio.Event()
            task = asyncio.create_task(
                run_reconciler(settings, db, api, 1.0, stop, age=timedelta(0), event_log=pg_log, metrics=metrics)
            )
            try:

                async def logged(text: str) -> bool:
                    return any(text in r.getMessage() for r in caplog.records)

                async def pass_done() -> bool:
                    return any(r.msg == "reconcile %s: %s" for r in caplog.records)

                await wait_for(lambda: logged("waits for the consumer to catch up"), 30, "the reconciler waiting")
                # it has looked at the status and found the consumer behind: nothing touched
                assert await query(pg_dsn, "SELECT id FROM sandboxes") == []
                async with worker(settings, pg_log, db):
                    await wait_for(lambda: logged("consumer caught up"), 60, "the reconciler starting")
                    await wait_for(pass_done, 60, "the first pass")
                    expected = expected_states(stack.emu, ids)
                    await wait_for(lambda: settled(pg_dsn, expected), 30, "every sandbox applied")
                    assert await query(pg_dsn, "SELECT 1 FROM sandbox_history WHERE kind = 'repair'") == []
                    assert _repairs(metrics) == {}

                    installed = [sid for sid in ids if stack.emu.state.store.sandboxes[sid].app_authorized]
                    stack.emu.set_knobs(delivery_enabled=False)
                    stack.emu.state.sandboxes.uninstall_app(installed[0])

                    async def counted() -> bool:
                        return _repairs(metrics) == {"flag": 1.0}

                    await wait_for(counted, 30, "the lost deauthorization repaired and counted")
                    assert any(r.levelno == logging.WARNING and installed[0] in r.getMessage() for r in caplog.records)
                    rows = await query(
                        pg_dsn,
                        "SELECT kind FROM sandbox_history WHERE sandbox_id = $1 AND kind = 'repair'",
                        installed[0],
                    )
                    assert len(rows) == 1
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)


def _repairs(metrics: WorkerMetrics) -> dict[str, float]:
    exposed = {
        s.labels["kind"]: s.value
        for family in metrics.registry.collect()
        if family.name == "processor_reconcile_repairs"
        for s in family.samples
        if s.name.endswith("_total")
    }
    return {kind: value for kind, value in exposed.items() if value}
