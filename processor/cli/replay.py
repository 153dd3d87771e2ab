"""`processor replay`: re-feed events into stripe.events (from the DLQ, a time window, offsets, one sandbox, or
Stripe's Events API); prints the counts, and a progress bar on a terminal."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from processor.cli.options import add_report_options
from processor.errors import ProcessorError
from processor.operations.dlq import DlqFilter
from processor.operations.progress import progress_for
from processor.operations.replay import ReplayReport, ReplayRequest, parse_offsets, replay
from processor.operations.session import ops_session
from processor.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="re-feed events into stripe.events for the consumer to process again",
        description="Events already processed are skipped; a re-run of an interrupted run (same options or "
        "--run-id) finishes it without duplicates.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-dlq", action="store_true", help="replay dead-lettered events")
    source.add_argument(
        "--from-stripe",
        action="store_true",
        help="replay events listed by Stripe's Events APIs, v2 sandbox events and v1 account.application.*"
        " (last 30 days at most)",
    )
    source.add_argument("--offsets", metavar="P:START-END,...", help="offsets of stripe.events (END exclusive)")
    source.add_argument("--sandbox", metavar="ID", help="every stored event of one sandbox")
    source.add_argument(
        "--window", action="store_true", help="stripe.events records in --since/--until (implied by --since alone)"
    )
    parser.add_argument("--since", help="start of the time window: a duration ago (3d, 2h) or an RFC 3339 time")
    parser.add_argument("--until", help="end of the time window (default: when the run starts)")
    parser.add_argument("--error-class", help="--from-dlq: only records with this error.class")
    parser.add_argument("--event-type", help="--from-dlq: only events of this type")
    parser.add_argument("--dlq-sandbox", metavar="ID", help="--from-dlq: only events of this sandbox")
    parser.add_argument("--dry-run", action="store_true", help="print what would be replayed, publish nothing")
    parser.add_argument("--run-id", help="resume (or name) this run; default: derived from the options")
    add_report_options(parser)
    parser.set_defaults(handler=run)


def request_from(args: argparse.Namespace) -> ReplayRequest:
    """The replay the options ask for; ValueError when they do not fit together."""
    if args.from_dlq:
        where = DlqFilter(args.error_class, args.event_type, args.dlq_sandbox)
        return ReplayRequest("dlq", dlq=where)
    if args.from_stripe:
        return ReplayRequest("stripe", since=args.since, until=args.until)
    if args.offsets:
        return ReplayRequest("offsets", offsets=parse_offsets(args.offsets))
    if args.sandbox:
        return ReplayRequest("sandbox", sandbox_id=args.sandbox)
    if args.window or args.since:
        return ReplayRequest("window", since=args.since, until=args.until)
    raise ValueError("say what to replay: --from-dlq, --from-stripe, --offsets, --sandbox or --since")


def render(report: ReplayReport) -> str:
    lines = []
    if report.dry_run:
        lines += [f"would replay {item['of']} {item['event_id']} {item['event_type']}" for item in report.listed]
    verb = "would replay" if report.dry_run else "replayed"
    lines.append(
        f"run {report.run_id}{' (resumed)' if report.resumed else ''}: read {report.read}, {verb} {report.replayed},"
        f" skipped {report.skipped_processed} already processed, {report.skipped_replayed} already replayed"
    )
    return "\n".join(lines)


async def _run(settings: Settings, args: argparse.Namespace, request: ReplayRequest) -> ReplayReport:
    async with ops_session(settings, stripe=request.source == "stripe") as ops:
        progress = progress_for(f"replay {request.source}", wanted=args.progress)
        return await replay(
            settings,
            ops.log,
            ops.db,
            request,
            stripe=ops.stripe,
            dry_run=args.dry_run,
            run_id=args.run_id,
            progress=progress,
        )


def run(args: argparse.Namespace) -> int:
    try:
        request = request_from(args)
        request.validate()
    except ValueError as exc:
        print(f"processor replay: {exc}", file=sys.stderr)
        return 2
    settings = Settings.from_env()  # a ConfigError is the CLI's to report
    try:
        report = asyncio.run(_run(settings, args, request))
    except ValueError as exc:
        print(f"processor replay: {exc}", file=sys.stderr)
        return 2
    except ProcessorError as exc:  # another run of the same id, Stripe or the log unavailable: no traceback
        print(f"processor replay: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(report.as_dict()).decode() if args.json else render(report))
    return 0
