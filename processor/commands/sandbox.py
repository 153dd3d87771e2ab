"""`processor sandbox show ID | list --state S --stuck-for 2d`: what the processor knows about sandboxes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from processor.database import Database
from processor.operations.inspect import list_sandboxes, show_sandbox
from processor.operations.timespec import parse_duration
from processor.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("sandbox", help="inspect sandboxes: state, history, events, anomalies")
    commands = parser.add_subparsers(dest="sandbox_command", required=True)
    show = commands.add_parser("show", help="one sandbox in full")
    show.add_argument("sandbox_id", metavar="ID")
    show.add_argument("--last", type=int, default=20, help="history rows and events to show (default 20)")
    show.set_defaults(handler=_show)
    listing = commands.add_parser("list", help="sandboxes by state and age")
    listing.add_argument("--state", help="only sandboxes in this state")
    listing.add_argument("--stuck-for", help="only sandboxes not updated for this long (e.g. 2d)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)


async def _with_db(settings: Settings, call: Any) -> Any:
    async with Database(settings, max_size=2) as db:
        return await call(db)


def _show(args: argparse.Namespace) -> int:
    found = asyncio.run(_with_db(Settings.from_env(), lambda db: show_sandbox(db, args.sandbox_id, last=args.last)))
    if found is None:
        print(f"processor sandbox: no sandbox {args.sandbox_id}", file=sys.stderr)
        return 1
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        stuck = parse_duration(args.stuck_for) if args.stuck_for else None
    except ValueError as exc:
        print(f"processor sandbox: {exc}", file=sys.stderr)
        return 2
    rows = asyncio.run(
        _with_db(
            Settings.from_env(), lambda db: list_sandboxes(db, state=args.state, stuck_for=stuck, limit=args.limit)
        )
    )
    for row in rows:
        if args.json:
            print(orjson.dumps(row).decode())
        else:
            print(f"{row['id']}  {row['state']:<18}  updated {row['updated_at']}  last event {row['last_event_id']}")
    return 0
