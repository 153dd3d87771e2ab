"""Events dead-lettered while the processor looked at the wrong Stripe account are replayed once that is fixed."""

from __future__ import annotations

from dataclasses import replace

import httpx
from starlette.applications import Starlette

from processor import constants as c
from processor.api.ops import ops_routes
from processor.consumer.inbound import OBSERVATION_TYPES
from processor.db.pool import Database
from processor.dev.emulator.runner import running_emulator
from processor.eventlog.kafka.log import KafkaEventLog
from processor.operations.dlq import DlqFilter, list_dlq
from processor.operations.replay import ReplayRequest, replay
from processor.runtime.serving import serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import (
    check_paths,
    create_sandboxes,
    drive,
    emulator_stack,
    expected_states,
    published,
    read_topic,
    settled,
    wait_for,
    with_db,
    worker,
)

TOKEN = "ops-token-0123456789"
NEED_A_FETCH = {"v2.core.claimable_sandbox.claimed", "v2.core.claimable_sandbox.updated"}


async def test_dlq_replay_after_the_fix_transitions_each_sandbox_exactly_once(
    kafka_settings: Settings, kafka_log: KafkaEventLog, pg_dsn: str
) -> None:
    """Sandbox events dead-lettered (sandbox_not_found) under a wrong Stripe account are replayed after the fix:
    every sandbox reaches Stripe's state with each transition published once, the DLQ shows nothing open,
    and replaying again publishes nothing."""
    async with emulator_stack(kafka_settings, kafka_log) as stack, running_emulator() as wrong:
        async with StripeApi(stack.settings) as api:
            ids = await create_sandboxes(api, 14, "dlq")
        good = with_db(stack.settings, pg_dsn)
        # the cause: the processor was pointed at another Stripe account, which knows none of these sandboxes
        broken = replace(good, stripe_api_base=wrong.base_url, stripe_api_key=Secret(wrong.api_key))
        dlq_topic = good.topic(c.TOPIC_DLQ)
        async with Database(good) as db:
            async with worker(broken, kafka_log, db):
                drive(stack.emu, ids)
                await stack.emu.wait_for_deliveries(within_s=60)
                records = await read_topic(kafka_log, good.topic(c.TOPIC_EVENTS))
                # the events only Stripe can settle are the ones the wrong account dead-letters, with the events
                # of the same sandbox in their batch (one fetch settles them all); alone, `created` and `expired`
                # settle from the event
                fetched = [r for r in records if r.header(c.H_EVENT_TYPE) in NEED_A_FETCH]
                observed = [r for r in records if r.header(c.H_EVENT_TYPE) in OBSERVATION_TYPES]
                assert fetched

                async def all_dead() -> bool:
                    return len(await read_topic(kafka_log, dlq_topic)) >= len(fetched)

                await wait_for(all_dead, 60, "every event that needs a fetch in the DLQ")
            dead = await list_dlq(good, kafka_log, db, DlqFilter(error_class="sandbox_not_found"))
            delivered = len(dead)
            assert len(fetched) <= delivered <= len(observed)
            assert {e.sandbox_id for e in dead} == {r.key.decode() for r in fetched if r.key}

            async with worker(good, kafka_log, db):  # the fix: the right account
                report = await replay(good, kafka_log, db, ReplayRequest("dlq"))
                assert (report.read, report.replayed, report.skipped_processed) == (delivered, delivered, 0)
                expected = expected_states(stack.emu, ids)
                await wait_for(lambda: settled(pg_dsn, expected), 60, "every sandbox in Stripe's state")

            pub = await published(kafka_log, good)
            check_paths(pub, expected)
            assert pub.raw_transition_count == len(pub.transitions), "a transition was published twice"
            assert await list_dlq(good, kafka_log, db) == []
            again = await replay(good, kafka_log, db, ReplayRequest("dlq"))
            assert (again.read, again.replayed) == (0, 0)
            hidden = await list_dlq(good, kafka_log, db, include_resolved=True)
            assert {e.resolution for e in hidden} == {"replayed"}

            # the HTTP twin answers only with a token, and shows the same DLQ
            app = Starlette(routes=ops_routes(replace(good, api_tokens=(Secret(TOKEN),)), kafka_log, db, None))
            async with serving(app, lifespan="auto") as url, httpx.AsyncClient(base_url=url) as http:
                assert (await http.get("/v1/ops/dlq")).status_code == 401
                wrong_token = await http.get("/v1/ops/dlq", headers={"Authorization": "Bearer nope"})
                assert wrong_token.status_code == 401
                auth = {"Authorization": f"Bearer {TOKEN}"}
                listed = await http.get("/v1/ops/dlq", params={"include_resolved": "true"}, headers=auth)
                assert listed.status_code == 200 and len(listed.json()["data"]) == delivered
                shown = await http.get(f"/v1/ops/sandboxes/{ids[0]}", headers=auth)
                assert shown.json()["sandbox"]["state"] == expected[ids[0]]
                dry = await http.post("/v1/ops/replay", json={"source": "dlq", "dry_run": True}, headers=auth)
                assert dry.status_code == 202, dry.text

                async def dry_run_ended() -> bool:
                    job = (await http.get(dry.headers["location"], headers=auth)).json()
                    return bool(job["status"] == "finished" and job["result"]["replayed"] == 0)

                await wait_for(dry_run_ended, 60, "the dry run to end, with nothing left to replay")
