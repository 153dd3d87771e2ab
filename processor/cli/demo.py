"""`processor demo`: the embedded default end to end against the bundled Stripe emulator."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from processor.dev.demo import run_demo, summary


def _demo(args: argparse.Namespace) -> int:
    result = asyncio.run(run_demo(args.sandboxes, data_dir=Path(args.data_dir) if args.data_dir else None,
                                  serve=args.serve))
    if not args.serve:  # a serving demo printed its summary before it waited for Ctrl-C
        print(summary(result))
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run the whole product against the bundled emulator")
    parser.add_argument("--sandboxes", type=int, default=40, help="how many sandboxes to create (default 40)")
    parser.add_argument("--data-dir", help="keep the demo's data here instead of a temporary directory")
    parser.add_argument("--serve", action="store_true",
                        help="after the summary keep the processor and its operator console running until Ctrl-C")
    parser.set_defaults(handler=_demo)
