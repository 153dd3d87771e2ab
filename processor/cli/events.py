"""`processor events show ID | list | unmatched`: was an event processed, when, how, and where did it go.

`list` and `unmatched` print a page, newest first; the last line names the `--cursor` of the next page. With
`--json` every subcommand prints one JSON object, the same as the operator API answers
(`/v1/ops/events/{id}`, `/v1/ops/events`, `/v1/ops/account_events/unmatched`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from processor.cli.options import add_json, add_paging, print_page

if TYPE_CHECKING:
    from processor.db.pool import Database
    from processor.operations.session import OpsSession

#: rows per page by default (kept here so parsing the command line imports nothing heavy)
DEFAULT_PAGE = 50


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("events", help="look up processed events: outcome, time, where they went")
    commands = parser.add_subparsers(dest="events_command", required=True)
    show = commands.add_parser("show", help="one event: processed or not, outcome, history rows, dead letters")
    show.add_argument("event_id", metavar="ID", help="the Stripe event id (evt_...)")
    add_json(show)
    show.set_defaults(handler=_show)
    listing = commands.add_parser("list", help="processed events, newest first, a page at a time")
    listing.add_argument("--sandbox", help="only events of this sandbox")
    listing.add_argument("--outcome", help="only this outcome (applied, stale, notice, flag, unmatched)")
    listing.add_argument("--event-type", help="only events of this type")
    add_paging(listing, DEFAULT_PAGE)
    listing.set_defaults(handler=_list)
    unmatched = commands.add_parser("unmatched", help="v1 account events that no sandbox matches (yet)")
    add_paging(unmatched, DEFAULT_PAGE)
    unmatched.set_defaults(handler=_unmatched)


def _session_call(call: Callable[[OpsSession], Awaitable[Any]]) -> Any:
    from processor.operations.session import ops_session
    from processor.settings import Settings

    async def run() -> Any:
        async with ops_session(Settings.from_env()) as ops:
            return await call(ops)

    return asyncio.run(run())


def _db_call(call: Callable[[Database], Awaitable[Any]]) -> Any:
    from processor.db.pool import Database
    from processor.settings import Settings

    async def run() -> Any:
        async with Database(Settings.from_env(), max_size=2) as db:
            return await call(db)

    return asyncio.run(run())


def _show(args: argparse.Namespace) -> int:
    from processor.operations.event_lookup import show_event

    found = _session_call(lambda ops: show_event(ops.settings, ops.log, ops.db, args.event_id))
    if found is None:
        print(f"processor events: no event {args.event_id} was processed, recorded or dead-lettered", file=sys.stderr)
        return 1
    print(orjson.dumps(found).decode() if args.json else _render_event(found))
    return 0


def _render_event(found: dict[str, Any]) -> str:
    processed = found["processed"]
    if processed is not None:
        head = (
            f"{found['event_id']}  processed at {processed['processed_at']}: {processed['outcome']}"
            f"  ({processed['event_type']}, sandbox {processed['sandbox_id'] or 'none'})"
        )
    else:
        head = f"{found['event_id']}  not processed ({found['status']})"
    lines = [head]
    for row in found["history"]:
        move = f" {row['from_state'] or '-'} -> {row['to_state']}" if row["to_state"] else ""
        lines.append(f"  {row['sandbox_id']}  {row['kind']}{move}  {row['reason'] or ''}".rstrip())
    for anomaly in found["anomalies"]:
        lines.append(f"  {anomaly['sandbox_id']}  anomaly: {anomaly['reason']}")
    if (account := found["account_event"]) is not None:
        matched = ", ".join(account["matched_sandboxes"]) or "no sandbox yet"
        lines.append(f"  account {account['account']} ({account['event_type']}): {matched}")
    for dead in found["dead_letters"]:
        lines.append(
            f"  dead letter {dead['coordinate']}: {dead['error_class']} {dead['error_message']}"
            f" ({dead['resolution'] or 'open'})"
        )
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from processor.operations.event_lookup import list_processed

    try:
        page = _db_call(
            lambda db: list_processed(
                db,
                sandbox_id=args.sandbox,
                outcome=args.outcome,
                event_type=args.event_type,
                limit=args.limit,
                cursor=args.cursor,
            )
        )
    except ValueError as exc:
        print(f"processor events: {exc}", file=sys.stderr)
        return 2
    return print_page(
        page,
        args.json,
        lambda r: f"{r['processed_at']}  {r['event_id']}  {r['event_type']}  {r['outcome']}  {r['sandbox_id'] or '-'}",
    )


def _unmatched(args: argparse.Namespace) -> int:
    from processor.operations.event_lookup import unmatched_account_events

    try:
        page = _db_call(lambda db: unmatched_account_events(db, limit=args.limit, cursor=args.cursor))
    except ValueError as exc:
        print(f"processor events: {exc}", file=sys.stderr)
        return 2
    return print_page(
        page, args.json, lambda r: f"{r['created']}  {r['event_id']}  {r['event_type']}  account {r['account']}"
    )
