"""`processor consume`: the lifecycle consumer (and, unless --no-relay, the outbox relay) in one process."""

from __future__ import annotations

import argparse
from dataclasses import replace

from processor.cli.options import add_health_port, worker_settings
from processor.consumer.loop import ConsumerOptions
from processor.runtime import loop as eventloop
from processor.runtime.worker import WorkerOptions, serve_worker

_DEFAULT_BATCH = ConsumerOptions().batch_size


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("consume", help="drive sandboxes through their lifecycle from stripe.events")
    parser.add_argument("--no-relay", action="store_true", help="do not run the outbox relay in this process")
    add_health_port(parser)
    parser.add_argument(
        "--batch-size", type=int, default=_DEFAULT_BATCH, help=f"records per batch (default {_DEFAULT_BATCH})"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = worker_settings()
    options = WorkerOptions(
        relay=not args.no_relay,
        health_port=args.health_port,
        health_host=settings.host,
        consumer=replace(ConsumerOptions(), batch_size=max(1, args.batch_size)),
    )
    eventloop.run(serve_worker(settings, options))
    return 0
