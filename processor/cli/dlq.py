"""`processor dlq list|show|purge`: the dead-letter topic. A purge asks for confirmation (or --yes)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson

from processor.cli.options import add_json, add_paging, print_page
from processor.operations import dlq as dlq_ops
from processor.operations.session import ops_session
from processor.paging import Page
from processor.settings import Settings


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--error-class", help="only records with this error.class")
    parser.add_argument("--event-type", help="only events of this type")
    parser.add_argument("--sandbox", help="only events of this sandbox")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dlq", help="list, show and purge dead-lettered events")
    commands = parser.add_subparsers(dest="dlq_command", required=True)
    listing = commands.add_parser("list", help="open dead-lettered events (replayed/purged ones hidden)")
    _filters(listing)
    listing.add_argument("--all", action="store_true", help="include replayed and purged records")
    add_paging(listing, dlq_ops.DEFAULT_PAGE)
    listing.set_defaults(handler=_list)
    show = commands.add_parser("show", help="one dead-lettered record in full (indented JSON unless --json)")
    show.add_argument("coordinate", metavar="PARTITION:OFFSET", help="the record, as `dlq list` names it (e.g. 0:17)")
    add_json(show)
    show.set_defaults(handler=_show)
    purge = commands.add_parser("purge", help="resolve dead-lettered events without replaying them")
    _filters(purge)
    purge.add_argument("coordinates", nargs="*", metavar="PARTITION:OFFSET", help="only these records")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(handler=_purge)


def _where(args: argparse.Namespace) -> dlq_ops.DlqFilter:
    return dlq_ops.DlqFilter(args.error_class, args.event_type, args.sandbox)


def _list(args: argparse.Namespace) -> int:
    settings = Settings.from_env()

    async def go() -> Page:
        async with ops_session(settings) as ops:
            return await dlq_ops.page_dlq(
                settings, ops.log, ops.db, _where(args), include_resolved=args.all, limit=args.limit,
                cursor=args.cursor,
            )

    try:
        page = asyncio.run(go())
    except ValueError as exc:  # a bad --limit or --cursor
        print(f"processor dlq: {exc}", file=sys.stderr)
        return 2
    return print_page(page, args.json, _line)


def _line(entry: dict[str, Any]) -> str:
    mark = f"  [{entry['resolution']}]" if entry["resolution"] else ""
    return (
        f"{entry['coordinate']:<10} {entry['event_id']}  {entry['event_type']}  {entry['sandbox_id']}"
        f"  {entry['error_class']}: {entry['error_message']}{mark}"
    )


def _show(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        dlq_ops.parse_coordinate(args.coordinate)
    except ValueError as exc:
        print(f"processor dlq: {exc}", file=sys.stderr)
        return 2

    async def go() -> dlq_ops.DlqEntry | None:
        async with ops_session(settings) as ops:
            return await dlq_ops.show_dlq(settings, ops.log, ops.db, args.coordinate)

    entry = asyncio.run(go())
    if entry is None:
        print(f"processor dlq: no record at {args.coordinate}", file=sys.stderr)
        return 1
    print(orjson.dumps(entry.detail(), option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0


def confirm(prompt: str, ask: Callable[[str], str] = input) -> bool:
    """True when the operator types yes; False on anything else or without a terminal."""
    if not sys.stdin.isatty():
        return False
    try:
        return ask(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _purge(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    where = _where(args)
    try:
        wanted = {dlq_ops.parse_coordinate(c) for c in args.coordinates}
    except ValueError as exc:
        print(f"processor dlq: {exc}", file=sys.stderr)
        return 2

    async def matching() -> list[str]:
        async with ops_session(settings) as ops:
            entries = await dlq_ops.list_dlq(settings, ops.log, ops.db, where)
        return [e.coordinate for e in entries if not wanted or (e.record.partition, e.record.offset) in wanted]

    # what the operator confirms is exactly what gets purged: records dead-lettered meanwhile are not
    confirmed = asyncio.run(matching())
    if not confirmed:
        print("nothing to purge")
        return 0
    kafka = bool(settings.kafka_bootstrap_servers)
    how = (
        ("marked as resolved (Kafka cannot delete single records; they stay on the topic, hidden from `dlq list`)")
        if kafka
        else "deleted from the PostgreSQL log"
    )
    if not args.yes and not confirm(f"purge {len(confirmed)} dead-lettered event(s)? They will be {how}. [y/N] "):
        print("processor dlq: purge not confirmed (type y, or pass --yes)", file=sys.stderr)
        return 1

    async def purge() -> dlq_ops.PurgeReport:
        async with ops_session(settings) as ops:
            return await dlq_ops.purge_dlq(settings, ops.log, ops.db, where, coordinates=confirmed)

    result = asyncio.run(purge())
    print(
        f"purged {result.purged} record(s): "
        + (
            "deleted from the PostgreSQL log"
            if result.deleted
            else "marked as resolved (Kafka keeps them until retention)"
        )
    )
    return 0
