"""Options shared by several commands: the workers' health endpoint, `--json` and paging, the jobs' output.

`--json` means one thing on every command: one JSON document on stdout, the same document the operator API
answers for the same question (a list is one page: `{"object": "list", "data": [...], "next_cursor": ...}`).
JSON Lines are kept for streams; the only stream is the log, on stderr (`processor.runtime.logs`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from processor.settings import Settings

if TYPE_CHECKING:
    from processor.paging import Page

#: the help of every `--json`, word for word (tests/foundation/test_cli_conventions.py holds every command to it)
JSON_HELP = "print one JSON document on stdout (what the operator API answers for the same request)"


def add_health_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-port", type=int, default=None,
        help="serve /healthz, /readyz and /metrics on this port of $PROCESSOR_HOST (0 = any free port)",
    )


def worker_settings() -> Settings:
    """Settings from the environment (logging is already set up by `cli.main`)."""
    return Settings.from_env()


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def add_paging(parser: argparse.ArgumentParser, default: int) -> None:
    """`--limit`, `--cursor` and `--json` of a command that prints a list a page at a time."""
    parser.add_argument("--limit", type=int, default=default, help=f"rows per page (default {default})")
    parser.add_argument("--cursor", help="the page after this cursor (printed at the end of the previous page)")
    add_json(parser)


def print_page(page: Page, as_json: bool, line: Callable[[dict[str, Any]], str]) -> int:
    """A page as one JSON document, or a line per row and the cursor of the next page."""
    if as_json:
        print(orjson.dumps(page.as_dict()).decode())
        return 0
    for row in page.data:
        print(line(row))
    if page.next_cursor:
        print(f"next page: --cursor {page.next_cursor}")
    return 0


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """`--progress/--no-progress` and `--json` of the long operator jobs (replay, reconcile)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    add_json(parser)
