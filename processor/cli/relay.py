"""`processor relay`: publish the transactional outbox to sandbox.transitions and sandbox.state."""

from __future__ import annotations

import argparse

from processor.cli.options import add_health_port, worker_settings
from processor.outbox.relay import DEFAULT_BATCH
from processor.runtime import loop as eventloop
from processor.runtime.worker import WorkerOptions, serve_worker


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("relay", help="publish outbox rows in order per key (safe to run several)")
    add_health_port(parser)
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH, help=f"rows per publish (default {DEFAULT_BATCH})"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = worker_settings()
    eventloop.run(
        serve_worker(
            settings,
            WorkerOptions(
                consume=False,
                relay=True,
                health_port=args.health_port,
                health_host=settings.host,
                relay_batch=max(1, args.batch_size),
            ),
        )
    )
    return 0
