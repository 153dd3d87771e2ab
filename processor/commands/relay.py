"""`processor relay`: publish the transactional outbox to sandbox.transitions and sandbox.state."""

from __future__ import annotations

import argparse
import asyncio
import logging

from processor.relay import DEFAULT_BATCH
from processor.settings import Settings
from processor.worker import WorkerOptions, serve_worker


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("relay", help="publish outbox rows in order per key (safe to run several)")
    parser.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve /healthz, /readyz and /metrics on this port (0 = any free port)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH, help=f"rows per publish (default {DEFAULT_BATCH})"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(
        serve_worker(
            settings,
            WorkerOptions(consume=False, relay=True, health_port=args.health_port, relay_batch=max(1, args.batch_size)),
        )
    )
    return 0
