"""`processor console`: the operator console alone (the distributed deployment; `processor run` serves it too)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path

from processor.runtime import loop as eventloop
from processor.settings import Settings


async def _main(settings: Settings) -> None:
    from processor.console.server import serve_console

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    def ready(url: str) -> None:
        print(f"operator console on {url} (sign in with a token of PROCESSOR_API_TOKENS or "
              "PROCESSOR_CONSOLE_READONLY_TOKENS); Ctrl-C to stop", flush=True)

    await serve_console(settings, stop, ready)


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if args.data_dir:
        changes["data_dir"] = Path(args.data_dir)
    if args.port is not None:
        changes["port"] = args.port
    if args.host:
        changes["host"] = args.host
    eventloop.run(_main(dataclasses.replace(settings, **changes)))  # type: ignore[arg-type]
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "console", help="the operator console alone, on the same database and log as the consumers",
        description="Serves /console/ on $PROCESSOR_HOST:$PROCESSOR_PORT (or --host/--port). Reads the same "
        "environment as `processor consume`; STRIPE_API_KEY enables Stripe's view and reconcile.")
    parser.add_argument("--host", help="address to listen on (default $PROCESSOR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default $PROCESSOR_PORT or 8000)")
    parser.add_argument("--data-dir", help="data directory of the embedded default (the one `processor run` uses)")
    parser.set_defaults(handler=_run)
