"""Processed-event lookups as an operator runs them: `processor events show|list|unmatched` and their HTTP twins,
paged with a cursor, and a sandbox's history paged instead of capped."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
from starlette.applications import Starlette

from processor import constants as c
from processor.api.ops import ops_routes
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State
from processor.runtime.serving import serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.ops_harness import cli, create_sandboxes, emulator_stack, settled, wait_for, with_db, worker

TOKEN = "ops-token-events-0123456789"


async def _publish_v1(log: EventLog, settings: Settings, event_id: str, account: str | None) -> None:
    """A v1 account event as the ingress publishes it; without an account it is malformed (dead-lettered)."""
    body = {
        "id": event_id,
        "object": "event",
        "type": "account.application.authorized",
        "created": int(datetime.now(UTC).timestamp()),
        "data": {"object": {"id": "ca_test", "object": "application"}},
        **({"account": account} if account else {}),
    }
    headers = [(c.H_EVENT_ID, event_id.encode()), (c.H_EVENT_TYPE, b"account.application.authorized")]
    await log.publish(settings.topic(c.TOPIC_EVENTS), (account or event_id).encode(), orjson.dumps(body), headers)


async def _processed_ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM processed_events")]
    finally:
        await conn.close()


async def _cli_json(settings: Settings, *args: str) -> Any:
    result = await cli(settings, *args, "--json")
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1, "--json prints one JSON object on one line"
    return orjson.loads(result.stdout)


async def test_events_show_list_unmatched_and_paged_history(
    pg_settings: Settings, pg_log: PostgresEventLog, pg_dsn: str
) -> None:
    """An operator finds every processed event by id (outcome, time, the history rows it wrote), a dead-lettered
    one with its error, an unmatched account event in its own view; lists page through every processed event
    exactly once, in the CLI and over HTTP, and a sandbox's history pages back to its first row."""
    async with emulator_stack(pg_settings, pg_log) as stack:
        settings = with_db(stack.settings, pg_dsn)
        async with StripeApi(settings) as api, Database(settings) as db, worker(settings, pg_log, db):
            ids = await create_sandboxes(api, 3, "lookup")
            sandboxes = stack.emu.state.sandboxes
            for sid in ids:
                sandboxes.claim(sid, "existing")
                sandboxes.install_app(sid, False)
            sandboxes.go_live(ids[0])
            sandboxes.uninstall_app(ids[0])
            await _publish_v1(pg_log, settings, "evt_test_nobody", "acct_test_nobody")
            await _publish_v1(pg_log, settings, "evt_test_malformed", None)
            await stack.emu.wait_for_deliveries(within_s=30)
            expected = {ids[0]: State.LIVE, ids[1]: State.INSTALLED, ids[2]: State.INSTALLED}
            await wait_for(lambda: settled(pg_dsn, expected), 60, "every sandbox settled")
            deauth = next(e for e in stack.emu.state.store.events if e.type == "account.application.deauthorized")

            async def all_processed() -> bool:
                return {deauth.id, "evt_test_nobody"} <= set(await _processed_ids(pg_dsn))

            await wait_for(all_processed, 60, "the account events processed")

        shown = await _cli_json(settings, "events", "show", deauth.id)
        assert (shown["status"], shown["processed"]["outcome"], shown["processed"]["sandbox_id"]) == (
            "processed",
            "flag",
            ids[0],
        )
        assert [(h["sandbox_id"], h["kind"]) for h in shown["history"]] == [(ids[0], "flag")]
        human = await cli(settings, "events", "show", deauth.id)
        assert human.code == 0 and f"processed at {shown['processed']['processed_at']}: flag" in human.stdout
        dead = await _cli_json(settings, "events", "show", "evt_test_malformed")
        assert dead["status"] == "dead_lettered" and dead["processed"] is None
        assert [d["error_class"] for d in dead["dead_letters"]] == ["malformed_event"]
        missing = await cli(settings, "events", "show", "evt_test_never")
        assert missing.code == 1 and "no event evt_test_never" in missing.stderr
        unmatched = await _cli_json(settings, "events", "unmatched")
        assert [(e["event_id"], e["account"]) for e in unmatched["data"]] == [("evt_test_nobody", "acct_test_nobody")]

        everything = await _processed_ids(pg_dsn)
        paged: list[str] = []
        cursor: list[str] = []
        while True:
            page = await _cli_json(settings, "events", "list", "--limit", "4", *cursor)
            paged += [e["event_id"] for e in page["data"]]
            if page["next_cursor"] is None:
                break
            cursor = ["--cursor", page["next_cursor"]]
        assert sorted(paged) == sorted(everything) and len(paged) == len(set(paged)) > 8
        of_one = await _cli_json(settings, "events", "list", "--sandbox", ids[0], "--outcome", "flag")
        # the authorization at install and the deauthorization (one batch may process both at the same time)
        assert sorted((e["event_type"], e["outcome"]) for e in of_one["data"]) == [
            ("account.application.authorized", "flag"),
            ("account.application.deauthorized", "flag"),
        ]
        assert deauth.id in {e["event_id"] for e in of_one["data"]}

        full = await _cli_json(settings, "sandbox", "show", ids[0], "--last", "1000")
        assert full["history_next"] is None and len(full["history"]) > 4

        async with Database(settings) as ops_db:
            app = Starlette(routes=ops_routes(replace(settings, api_tokens=(Secret(TOKEN),)), pg_log, ops_db, None))
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with serving(app, lifespan="auto") as url, httpx.AsyncClient(base_url=url, headers=auth) as http:
                assert (await http.get(f"/v1/ops/events/{deauth.id}")).json() == shown
                assert (await http.get("/v1/ops/events/evt_test_never")).status_code == 404
                assert (await http.get("/v1/ops/events", params={"cursor": "garbage"})).status_code == 400
                assert (await http.get("/v1/ops/account_events/unmatched")).json() == unmatched
                over_http: list[str] = []
                params: dict[str, str] = {"limit": "5"}
                while True:
                    answer = (await http.get("/v1/ops/events", params=params)).json()
                    over_http += [e["event_id"] for e in answer["data"]]
                    if answer["next_cursor"] is None:
                        break
                    params["cursor"] = answer["next_cursor"]
                assert over_http == paged
                history: list[dict[str, Any]] = []
                query: dict[str, str] = {"limit": "2"}
                while True:
                    page = (await http.get(f"/v1/ops/sandboxes/{ids[0]}", params=query)).json()
                    history = page["history"] + history
                    if page["history_next"] is None:
                        break
                    query["before"] = str(page["history_next"])
                assert history == full["history"]
