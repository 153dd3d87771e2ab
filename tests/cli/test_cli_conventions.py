"""One convention for every command: help on every option, `--json` meaning one JSON document, `--version`,
and one logging set-up (JSON lines on stderr by default, a human format with --log-format) made in main."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest_asyncio

from processor.cli import options
from processor.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _parsers(parser: argparse.ArgumentParser, name: str = "processor") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line with its command name, subcommands included (argparse keeps them in
    its private `_actions`; walking them is the only way to see every option)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            yield action


def test_the_walk_sees_every_command() -> None:
    """The walk below reaches nested commands, so a test over it cannot pass by seeing nothing."""
    names = {name for name, _ in _parsers(build_parser())}
    assert {"processor run", "processor sandbox list", "processor dlq purge", "processor events show"} <= names


def test_every_option_and_argument_has_help() -> None:
    """`processor CMD --help` explains each option and argument: none is listed without a sentence."""
    missing = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for name, parser in _parsers(build_parser())
        for action in _options(parser)
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_json_means_one_json_document_on_every_command() -> None:
    """Every `--json` says the same thing in --help, and that thing is one JSON document."""
    helps = {
        name: action.help
        for name, parser in _parsers(build_parser())
        for action in _options(parser)
        if "--json" in action.option_strings
    }
    assert len(helps) >= 6
    assert {name for name, text in helps.items() if text != options.JSON_HELP} == set()
    assert "one JSON document" in options.JSON_HELP


def _processor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    return subprocess.run([sys.executable, "-m", "processor", *args], capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})}, check=False)


def test_version_prints_the_package_version() -> None:
    """`processor --version` prints the version pyproject.toml declares, and exits 0."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = _processor("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"processor {declared}"


@pytest_asyncio.fixture
async def empty_database(pg_server_dsn: str) -> AsyncIterator[str]:
    """A database with no schema yet, so `db upgrade` has migrations to apply (and log)."""
    name = f"test_logs_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(pg_server_dsn)._replace(path=f"/{name}"))
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _json_lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines()]


async def test_logs_are_json_lines_at_info_by_default(empty_database: str) -> None:
    """A command's INFO lines reach stderr as JSON lines (stdout keeps the command's own output)."""
    result = _processor("db", "upgrade", env={"PROCESSOR_DATABASE_URL": empty_database})
    assert result.returncode == 0, result.stderr
    lines = _json_lines(result.stderr)  # every line parses: nothing else is written there
    applied = [line for line in lines if str(line["msg"]).startswith("applied migration")]
    assert applied and {line["level"] for line in applied} == {"INFO"}
    assert {line["logger"] for line in applied} == {"processor.db.migrate"}
    assert "applied 0001_event_log" in result.stdout and "{" not in result.stdout


async def test_log_format_text_and_log_level(empty_database: str) -> None:
    """`--log-format text` writes one readable line per record; PROCESSOR_LOG_LEVEL=WARNING silences INFO."""
    env = {"PROCESSOR_DATABASE_URL": empty_database}
    result = _processor("--log-format", "text", "db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stderr.splitlines() if "applied migration 0001_event_log" in line]
    assert len(applied) == 1 and " INFO " in applied[0] and not applied[0].startswith("{")
    quiet = _processor("db", "upgrade", env={**env, "PROCESSOR_LOG_LEVEL": "WARNING"})
    assert quiet.returncode == 0 and quiet.stderr == ""


async def test_log_format_is_taken_after_the_command_too(empty_database: str) -> None:
    """`processor db upgrade --log-format text` means what `processor --log-format text db upgrade` does."""
    result = _processor("db", "upgrade", "--log-format", "text", env={"PROCESSOR_DATABASE_URL": empty_database})
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stderr.splitlines() if "applied migration 0001_event_log" in line]
    assert len(applied) == 1 and " INFO " in applied[0] and not applied[0].startswith("{")


def test_a_bad_log_format_is_a_usage_error() -> None:
    """An unknown --log-format or PROCESSOR_LOG_FORMAT is refused with exit 2, naming what is wrong."""
    assert _processor("--log-format", "xml", "lifecycle", "diagram", "--check").returncode == 2
    result = _processor("lifecycle", "diagram", "--check", env={"PROCESSOR_LOG_FORMAT": "xml"})
    assert result.returncode == 2 and "PROCESSOR_LOG_FORMAT" in result.stderr
