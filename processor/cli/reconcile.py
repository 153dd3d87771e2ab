"""`processor reconcile`: fetch sandboxes that have not moved for a while and drive them to Stripe's state."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from processor.cli.options import add_report_options
from processor.errors import ProcessorError
from processor.operations.progress import progress_for
from processor.operations.reconcile import ReconcileReport, reconcile
from processor.operations.session import ops_session
from processor.operations.timespec import parse_duration
from processor.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="repair sandboxes whose webhooks were missed, and find ones Stripe knows but we do not",
        description="An interrupted run continues where it stopped when run again.",
    )
    parser.add_argument("--age", default="1h", help="only sandboxes not updated for this long (default 1h)")
    parser.add_argument(
        "--no-discover",
        action="store_true",
        help="skip the search of Stripe's events for sandboxes we do not know and for lost v1 account events",
    )
    parser.add_argument("--limit", type=int, help="check at most this many sandboxes in this run")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    add_report_options(parser)
    parser.set_defaults(handler=run)


def render(report: ReconcileReport) -> str:
    verb = "would repair" if report.dry_run else "repaired"
    repaired = ", ".join(f"{count} to {state}" for state, count in sorted(report.repaired.items())) or "none"
    return (
        f"reconcile {report.run_id}{' (resumed)' if report.resumed else ''}: checked {report.checked},"
        f" in sync {report.in_sync}, {verb} {repaired} ({report.transitions} transitions), stale {report.stale},"
        f" anomalies {report.anomalies}, unknown to Stripe {report.missing_at_stripe}, failed {report.failed},"
        f" discovered {len(report.discovered)}, lost account events {len(report.account_events)},"
        f" repairs recorded {report.repairs}"
    )


async def _run(settings: Settings, args: argparse.Namespace) -> ReconcileReport:
    async with ops_session(settings, stripe=True) as ops:
        assert ops.stripe is not None
        return await reconcile(
            settings,
            ops.db,
            ops.stripe,
            age=parse_duration(args.age),
            dry_run=args.dry_run,
            discover=not args.no_discover,
            limit=args.limit,
            progress=progress_for("reconcile", wanted=args.progress),
        )


def run(args: argparse.Namespace) -> int:
    try:
        parse_duration(args.age)
    except ValueError as exc:
        print(f"processor reconcile: {exc}", file=sys.stderr)
        return 2
    settings = Settings.from_env()  # a ConfigError is the CLI's to report
    try:
        report = asyncio.run(_run(settings, args))
    except ProcessorError as exc:  # Stripe or the database unavailable: say so, no traceback
        print(f"processor reconcile: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(report.as_dict()).decode() if args.json else render(report))
    return 0
