"""`processor status [--json] [--wait-caught-up --timeout 60]`: is everything received so far applied and published?

Exit codes, for scripts: 0 caught up, 1 behind (or still behind when the wait ran out), 3 the log or the database
cannot be reached (2 stays the CLI's configuration error).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

import orjson

from processor.cli.options import add_json
from processor.errors import ProcessorError
from processor.operations.session import ops_session
from processor.operations.status import NotCaughtUp, Status, read_status, wait_caught_up
from processor.settings import Settings

EXIT_BEHIND = 1
EXIT_UNAVAILABLE = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="consumer lag per partition and unpublished outbox rows; exit 0 when caught up",
        description="Works on the embedded default (give the same --data-dir as `processor run`) and on the "
        "distributed deployment (the same environment as `processor consume`).",
    )
    parser.add_argument("--data-dir",
                        help="data directory of the embedded default (default $PROCESSOR_DATA_DIR or ./var)")
    add_json(parser)
    parser.add_argument("--wait-caught-up", action="store_true", help="wait until caught up (see --timeout)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up waiting after this long, exit 1 (default 60)")
    parser.set_defaults(handler=run)


async def _status(settings: Settings, wait_s: float | None) -> Status:
    async with ops_session(settings) as ops:
        if wait_s is None:
            return await read_status(settings, ops.log, ops.db)
        return await wait_caught_up(settings, ops.log, ops.db, wait_s)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()  # a ConfigError is the CLI's to report
    if args.data_dir:
        settings = dataclasses.replace(settings, data_dir=Path(args.data_dir))
    if args.timeout < 0:
        print("processor status: --timeout must be >= 0", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(_status(settings, args.timeout if args.wait_caught_up else None))
    except NotCaughtUp as exc:
        _print(exc.status, args.json)
        print(f"processor status: {exc}", file=sys.stderr)
        return EXIT_BEHIND
    except ProcessorError as exc:  # the log or the database unavailable: say so, no traceback
        print(f"processor status: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    _print(status, args.json)
    return 0 if status.caught_up else EXIT_BEHIND


def _print(status: Status, as_json: bool) -> None:
    print(orjson.dumps(status.as_dict()).decode() if as_json else status.describe(), flush=True)
