"""`processor sandbox show ID | list --state S --stuck-for 2d`: what the processor knows about sandboxes.

Scripts run `sandbox show --json` for thousands of sandboxes, so parsing the command line imports nothing
heavy: the database driver and the operations load only when a subcommand runs.
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

#: history rows and processed events `sandbox show` prints by default (operations.inspect.DEFAULT_LAST)
DEFAULT_LAST = 20
#: sandboxes per page of `sandbox list` (operations.inspect.DEFAULT_SANDBOX_PAGE)
DEFAULT_PAGE = 100


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("sandbox", help="inspect sandboxes: state, history, events, anomalies")
    commands = parser.add_subparsers(dest="sandbox_command", required=True)
    show = commands.add_parser("show", help="one sandbox in full")
    show.add_argument("sandbox_id", metavar="ID", help="the sandbox's id (csb_...)")
    show.add_argument(
        "--last", type=int, default=DEFAULT_LAST, help=f"history rows and events to show (default {DEFAULT_LAST})"
    )
    show.add_argument(
        "--before", type=int, metavar="HISTORY_ID", help="the history page before this row (its history_next)"
    )
    add_json(show)
    show.set_defaults(handler=_show)
    listing = commands.add_parser("list", help="sandboxes by state and age")
    listing.add_argument("--state", help="only sandboxes in this state")
    listing.add_argument("--stuck-for", help="only sandboxes not updated for this long (e.g. 2d)")
    add_paging(listing, DEFAULT_PAGE)
    listing.set_defaults(handler=_list)


def _with_db(call: Callable[[Database], Awaitable[Any]]) -> Any:
    from processor.db.pool import Database
    from processor.settings import Settings

    async def run() -> Any:
        # no migration: reading needs none, and a check per call would cost every scripted call a round trip
        async with Database(Settings.from_env(), min_size=1, max_size=1) as db:
            return await call(db)

    return asyncio.run(run())


def _show(args: argparse.Namespace) -> int:
    from processor.operations.inspect import show_sandbox

    found = _with_db(lambda db: show_sandbox(db, args.sandbox_id, last=args.last, before=args.before))
    if found is None:
        print(f"processor sandbox: no sandbox {args.sandbox_id}", file=sys.stderr)
        return 1
    print(orjson.dumps(found).decode() if args.json else orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    return 0


def _list(args: argparse.Namespace) -> int:
    from processor.operations.inspect import list_sandboxes
    from processor.operations.timespec import parse_duration

    try:
        stuck = parse_duration(args.stuck_for) if args.stuck_for else None
    except ValueError as exc:
        print(f"processor sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        page = _with_db(
            lambda db: list_sandboxes(db, state=args.state, stuck_for=stuck, limit=args.limit, cursor=args.cursor)
        )
    except ValueError as exc:  # a bad --limit or --cursor
        print(f"processor sandbox: {exc}", file=sys.stderr)
        return 2
    return print_page(
        page,
        args.json,
        lambda r: f"{r['id']}  {r['state']:<18}  updated {r['updated_at']}  last event {r['last_event_id']}",
    )
