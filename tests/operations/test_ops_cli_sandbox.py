"""`processor sandbox show|list` and `processor reconcile` run as an operator would."""

from __future__ import annotations

import asyncpg
import orjson

from processor.db.pool import Database
from processor.eventlog.postgres.log import PostgresEventLog
from processor.settings import Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import (
    cli,
    create_sandboxes,
    emulator_stack,
    expected_states,
    settled,
    wait_for,
    with_db,
    worker,
)


async def test_sandbox_show_and_list_after_reconcile_finds_an_anomaly(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """`reconcile --progress --json` finds the sandbox Stripe calls expired after it was claimed (an anomaly,
    state kept) with a bar on stderr and one JSON report on stdout; `sandbox show` prints its state, history
    and the anomaly; `sandbox list --state S --stuck-for 2d` lists exactly the sandboxes in S idle that long."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, pg_log, db):
            ids = sorted(await create_sandboxes(api, 5, "inspect"))
            for sid in ids[:3]:
                stack.emu.state.sandboxes.claim(sid, "existing")
            stack.emu.state.sandboxes.claim(ids[3], "new")
            await stack.emu.wait_for_deliveries(within_s=30)
            expected = expected_states(stack.emu, ids)
            assert [expected[sid] for sid in ids] == ["pending_install"] * 3 + ["pending_onboarding", "unclaimed"]
            await wait_for(lambda: settled(pg_dsn, expected), 30, "the claims applied")

            # Stripe now reports something impossible for the first one; reconcile sees it
            stack.emu.state.store.sandboxes[ids[0]].status = "expired"
            done = await cli(settings, "reconcile", "--age", "0s", "--no-discover", "--json", "--progress")
            assert done.code == 0, done.stderr
            report = orjson.loads(done.stdout)
            assert (report["checked"], report["in_sync"], report["anomalies"], report["transitions"]) == (5, 4, 1, 0)
            assert f"reconcile [{'#' * 30}] 5/5" in done.stderr

        conn = await asyncpg.connect(pg_dsn)
        try:  # two sandboxes have not moved for three days
            await conn.execute(
                "UPDATE sandboxes SET updated_at = now() - interval '3 days' WHERE id = ANY($1::text[])",
                [ids[1], ids[4]],
            )
        finally:
            await conn.close()

        shown = await cli(settings, "sandbox", "show", ids[0])
        assert shown.code == 0, shown.stderr
        detail = orjson.loads(shown.stdout)
        assert detail["sandbox"]["state"] == "pending_install"
        transitions = [h for h in detail["history"] if h["to_state"] and h["kind"] != "anomaly"]
        assert [h["to_state"] for h in transitions][-1] == "pending_install"
        assert transitions[0]["to_state"] == "unclaimed"
        assert [(a["current_state"], a["observed_state"]) for a in detail["anomalies"]] == [
            ("pending_install", "expired")
        ]
        assert (detail["history"][-1]["kind"], detail["history"][-1]["to_state"]) == ("anomaly", "expired")
        assert detail["sandbox"]["last_event_id"] in {e["event_id"] for e in detail["last_events"]}
        assert detail["outbox_pending"] == 0
        recent = orjson.loads((await cli(settings, "sandbox", "show", ids[0], "--last", "2")).stdout)["history"]
        assert recent == detail["history"][-2:]
        unknown = await cli(settings, "sandbox", "show", "clmsbx_test_nobody")
        assert unknown.code == 1 and "no sandbox clmsbx_test_nobody" in unknown.stderr

        async def listed(*args: str) -> list[str]:
            result = await cli(settings, "sandbox", "list", *args)
            assert result.code == 0, result.stderr
            return [line.split()[0] for line in result.stdout.splitlines()]

        assert await listed("--state", "pending_install") == ids[:3]
        assert await listed("--state", "pending_install", "--stuck-for", "2d") == [ids[1]]
        assert await listed("--stuck-for", "2d") == [ids[1], ids[4]]
        assert await listed("--state", "unclaimed", "--stuck-for", "4d") == []
        page = orjson.loads((await cli(settings, "sandbox", "list", "--stuck-for", "2d", "--json")).stdout)
        assert [(r["id"], r["state"]) for r in page["data"]] == [
            (ids[1], "pending_install"),
            (ids[4], "unclaimed"),
        ]
        assert page["next_cursor"] is None
        # one JSON document per page, the next one through --cursor, as GET /v1/ops/sandboxes answers
        first = orjson.loads((await cli(settings, "sandbox", "list", "--limit", "2", "--json")).stdout)
        rest = orjson.loads((await cli(settings, "sandbox", "list", "--cursor", first["next_cursor"], "--json")).stdout)
        assert [r["id"] for r in first["data"] + rest["data"]] == sorted(ids) and rest["next_cursor"] is None
        bad = await cli(settings, "sandbox", "list", "--stuck-for", "2 days")
        assert bad.code == 2 and "not a duration" in bad.stderr
