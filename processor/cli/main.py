"""`processor` command line: a thin layer that parses options and calls library functions.

Each subcommand lives in the module that owns its feature and exposes `register(subparsers)`; the modules are
listed in COMMAND_MODULES so adding a command is one line here. A module is named after its command, so a run
of one command imports only that command's module (scripts call `processor sandbox show` thousands of times).

Conventions every command follows: logging is set up here, once (`processor.runtime.logs`: JSON lines on
stderr, or `--log-format text`); `--json` prints one JSON document (`cli.options.JSON_HELP`); every option has
a help text (tests/foundation/test_cli_conventions.py walks the parser).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from processor import __version__
from processor.errors import ConfigError
from processor.runtime import logs
from processor.runtime.logflush import flush_logs_on_sigterm

#: modules that define subcommands through `register(subparsers) -> None`
COMMAND_MODULES = (
    "processor.cli.consume",
    "processor.cli.console",
    "processor.cli.db",
    "processor.cli.demo",
    "processor.cli.dev",
    "processor.cli.emulator",
    "processor.cli.ingress",
    "processor.cli.lifecycle",
    "processor.cli.run",
    "processor.cli.relay",
    "processor.cli.topics",
    "processor.cli.sandbox",
    "processor.cli.replay",
    "processor.cli.reconcile",
    "processor.cli.dlq",
    "processor.cli.status",
    "processor.cli.events",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command` alone when a module is named after it."""
    parser = argparse.ArgumentParser(prog="processor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"processor {__version__}",
                        help="print the version and exit")
    parser.add_argument("--log-format", choices=logs.FORMATS, default=None,
                        help="log lines on stderr as JSON (default) or as text for a terminal; default"
                        f" ${logs.FORMAT_VARIABLE} or json, level ${logs.LEVEL_VARIABLE} or INFO")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = [m for m in COMMAND_MODULES if m.rpartition(".")[2] == command]
    for module_name in chosen or COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    _log_format_after_commands(parser)
    return parser


def _log_format_after_commands(parser: argparse.ArgumentParser) -> None:
    """Accept --log-format after any command word too (`processor db upgrade --log-format text`), as people type
    it; SUPPRESS keeps a value given before the command when none is given after it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("--log-format", choices=logs.FORMATS, default=argparse.SUPPRESS,
                                     help="as before the command: json (default) or text")
                _log_format_after_commands(command)


def _command(argv: Sequence[str]) -> str | None:
    """The command word of `argv`: its first argument that is neither an option nor an option's value."""
    takes_value = False
    for arg in argv:
        if takes_value:
            takes_value = False
        elif arg == "--log-format":
            takes_value = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `processor` script; returns the exit code."""
    flush_logs_on_sigterm()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    try:
        args.log_options = logs.LogOptions.from_env(os.environ, args.log_format)
        logs.configure(args.log_options)
        result = args.handler(args)
    except ConfigError as exc:
        # a configuration mistake is the operator's to fix: name the variable, no traceback
        print(f"processor: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
