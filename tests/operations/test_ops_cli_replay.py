"""`processor replay --sandbox / --offsets / --dry-run` run as an operator would: exactly what is re-published."""

from __future__ import annotations

import asyncpg
import orjson

from processor import constants as c
from processor.constants import H_REPLAY_OF, H_REPLAY_RUN
from processor.db.pool import Database
from processor.eventlog.base import Record
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.replay import LOCK_SPACE
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import (
    cli,
    create_sandboxes,
    emulator_stack,
    publish_thin_events,
    read_topic,
    snapshot,
    wait_for,
    with_db,
    worker,
)

UPDATED = "v2.core.claimable_sandbox.updated"


def coordinate(record: Record) -> str:
    return f"events:{record.partition}:{record.offset}"


async def test_replay_sandbox_and_offsets_from_the_command_line(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """With 12 events processed and 6 not: `replay --sandbox ID --dry-run` lists that sandbox's one unprocessed
    event and publishes nothing; `replay --sandbox ID` re-publishes exactly that record (same key, body and
    ingress headers, plus where it came from); `replay --offsets P:1-END` re-publishes exactly the unprocessed
    records of that range; processed ones are counted as skipped; stdout carries only the counts."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        stack.emu.set_knobs(delivery_enabled=False)
        settings = with_db(stack.settings, pg_dsn)
        topic = settings.topic(c.TOPIC_EVENTS)
        async with StripeApi(settings) as api, Database(settings) as db:
            ids = await create_sandboxes(api, 6, "cli")
            old = await publish_thin_events(pg_log, settings, ids, 2, tag="old")
            async with worker(settings, pg_log, db):

                async def old_processed() -> bool:
                    return (await snapshot(pg_dsn)).processed == old

                await wait_for(old_processed, 30, "the first 12 events processed")
            await publish_thin_events(pg_log, settings, ids, 1, tag="new")
        originals = await read_topic(pg_log, topic)
        unprocessed = {r.header(c.H_EVENT_ID) for r in originals if "_new_" in (r.header(c.H_EVENT_ID) or "")}
        assert len(originals) == 18 and len(unprocessed) == 6
        ends = await pg_log.end_offsets(topic)
        before = await snapshot(pg_dsn)

        # --- one sandbox, dry: lists what it would send, sends nothing
        target = ids[0]
        mine = [r for r in originals if r.key == target.encode()]
        fresh = [r for r in mine if r.header(c.H_EVENT_ID) in unprocessed]
        assert len(mine) == 3 and len(fresh) == 1
        dry = await cli(settings, "replay", "--sandbox", target, "--dry-run")
        assert dry.code == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert lines[:-1] == [f"would replay {coordinate(fresh[0])} {fresh[0].header(c.H_EVENT_ID)} {UPDATED}"]
        assert "read 3, would replay 1, skipped 2 already processed, 0 already replayed" in lines[-1]
        assert dry.said == ""  # not a terminal, no --progress: no bar (log lines only)
        assert await pg_log.end_offsets(topic) == ends
        assert await snapshot(pg_dsn) == before

        # --- one sandbox, for real
        done = await cli(settings, "replay", "--sandbox", target, "--json")
        assert done.code == 0, done.stderr
        report = orjson.loads(done.stdout)
        assert (report["read"], report["replayed"], report["skipped_processed"]) == (3, 1, 2)
        copies = [r for r in await read_topic(pg_log, topic) if r.header(H_REPLAY_RUN)]
        assert len(copies) == 1
        copy = copies[0]
        assert (copy.key, copy.value) == (fresh[0].key, fresh[0].value)
        assert copy.header(H_REPLAY_OF) == coordinate(fresh[0]) and copy.header(H_REPLAY_RUN) == report["run_id"]
        for name in (c.H_EVENT_ID, c.H_EVENT_TYPE, c.H_RECEIVED_AT, c.H_SECRET_INDEX):
            assert copy.header(name) == fresh[0].header(name)

        # --- an offset range of the fullest partition, first dry then for real with a progress bar
        fullest = max(ends, key=lambda tp: ends[tp])
        in_range = [r for r in originals if r.partition == fullest.partition and 1 <= r.offset < ends[fullest]]
        want = sorted(coordinate(r) for r in in_range if r.header(c.H_EVENT_ID) in unprocessed)
        spec = f"{fullest.partition}:1-{ends[fullest]}"
        ends = await pg_log.end_offsets(topic)
        dry = await cli(settings, "replay", "--offsets", spec, "--dry-run")
        assert dry.code == 0, dry.stderr
        assert sorted(line.split()[2] for line in dry.stdout.splitlines()[:-1]) == want
        assert await pg_log.end_offsets(topic) == ends

        done = await cli(settings, "replay", "--offsets", spec, "--json", "--progress")
        assert done.code == 0, done.stderr
        report = orjson.loads(done.stdout)  # exactly one JSON document: the bar went to stderr
        assert report["read"] == len(in_range)
        assert report["replayed"] == len(want) and report["skipped_processed"] == len(in_range) - len(want)
        assert f"replay offsets [{'#' * 30}] {len(in_range)}/{len(in_range)}" in done.stderr
        copies = [r for r in await read_topic(pg_log, topic) if r.header(H_REPLAY_RUN) == report["run_id"]]
        assert sorted(r.header(H_REPLAY_OF) or "" for r in copies) == want

        # nothing the replays did touched the store: the consumer is not running
        assert await snapshot(pg_dsn) == before

        # a run another process holds right now is refused with a message, not a traceback
        ends = await pg_log.end_offsets(topic)
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_SPACE, "held-run")
            busy = await cli(settings, "replay", "--offsets", spec, "--run-id", "held-run")
        finally:
            await conn.close()
        assert busy.code == 1 and busy.said.strip() == "processor replay: replay run held-run is already running"
        assert await pg_log.end_offsets(topic) == ends
