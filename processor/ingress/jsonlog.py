"""One JSON object per log line, so log pipelines index event ids and outcomes without parsing prose.

Why not logging's QueueHandler and QueueListener (issue 17 asked for the stdlib here unless a benchmark says
otherwise): the ingress writes a line per delivery, and through a QueueHandler each line costs a LogRecord, a
formatted copy and a wake-up of the listener thread, which then competes for the GIL with the event loop. In
one run (2026-12-02, bench/ingress_app.py: the ingress app driven in-process by 64 tasks against a real broker,
on a loaded machine) it took the app's CPU per delivery from 110-160 us to 150-225 us (80-110 us before
asyncio.timeout and datetime replaced the deadline sweep and the cached clock), while bench/ingress.py's floor
(0.6 x a no-op endpoint) was missed already. So lines are buffered here and written in batches, and the
per-delivery line skips the LogRecord when only this handler would see it.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TextIO

import orjson


def iso_ms(created: float) -> str:
    """`ts` of every line: ISO 8601 UTC with milliseconds ("2026-11-22T03:12:16.123+00:00")."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


#: the keys every line starts with; a field of the same name replaces it
_LEADING_KEYS = frozenset(("ts", "level", "logger", "msg"))


@functools.lru_cache(maxsize=1024)
def _middle(level: str, logger: str, msg: str) -> str:
    """`"level":..,"logger":..,"msg":..` as JSON, made once per message: most lines repeat a few messages."""
    return orjson.dumps({"level": level, "logger": logger, "msg": msg}).decode()[1:-1]


def json_line(created: float, level: str, logger: str, msg: str, fields: dict[str, object] | None) -> str:
    """One log line: when, level, logger, message, then the structured fields.

    The same text as dumping one merged dict, put together from the cached middle and the dumped fields
    (timeit: 0.7 us instead of 1.6 for an access-log line), since the ingress writes one per delivery.
    """
    if fields and not _LEADING_KEYS.isdisjoint(fields):
        line = {"ts": iso_ms(created), "level": level, "logger": logger, "msg": msg, **fields}
        return orjson.dumps(line, default=str).decode()
    head = '{"ts":"' + iso_ms(created) + '",' + _middle(level, logger, msg)
    if not fields:
        return head + "}"
    return head + "," + orjson.dumps(fields, default=str).decode()[1:]


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON; structured fields come from `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        fields = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname, record.name, record.getMessage(), fields)


class BufferedLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches instead of one write and flush per record.

    One access-log line per delivery cost about a third of the ingress's throughput when every line was its own
    write (bench/ingress.py: 4.1k req/s with per-delivery logs, 6.1k without). Lines wait at most
    `flush_interval_s` (a daemon thread flushes), WARNING and above are written at once, and logging.shutdown()
    flushes at exit; a SIGKILL can lose the last fraction of a second of INFO lines.
    """

    def __init__(self, stream: TextIO | None = None, *, flush_interval_s: float = 0.5, max_lines: int = 512) -> None:
        super().__init__(stream)
        self.max_lines = max_lines
        # appended without the handler's lock (deque appends and pops are atomic), taken by the writer under it
        self._lines: collections.deque[str] = collections.deque()
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, args=(flush_interval_s,),
                                         name="log-flusher", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, record.levelno)

    def write_line(self, line: str, level: int) -> None:
        """Queue a formatted line (the fast path of `log_fields`, which skips the LogRecord)."""
        self._lines.append(line)
        if level >= logging.WARNING or len(self._lines) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._lines:
                # only the lines queued so far: others may be appended meanwhile, and keep their order
                lines = [self._lines.popleft() for _ in range(len(self._lines))]
                self.stream.write("\n".join(lines) + "\n")
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def _flush_periodically(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            self.flush()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()


def _sole_line_handler(logger: logging.Logger, level: int) -> BufferedLineHandler | None:
    """The handler a record of `logger` would reach if it is a lone unfiltered BufferedLineHandler, else None."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            if current.filters or len(current.handlers) != 1:
                return None
            handler = current.handlers[0]
            if not isinstance(handler, BufferedLineHandler) or handler.filters or level < handler.level:
                return None
            return handler if isinstance(handler.formatter, JsonFormatter) else None
        if current.filters or not current.propagate:
            return None
        current = current.parent
    return None


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, object]) -> None:
    """`logger.log(level, msg, extra={"fields": fields})`, the same line, at a fraction of the cost.

    For lines written on every request: when the record would only reach our JSON handler (the configured
    case), the line is formatted directly, without a LogRecord, its caller lookup and the handler chain
    (timeit, one access-log line: 8.9 us through logging, 2.3 us here). Any other logging set-up (a test's
    capture, an extra handler) gets the ordinary record.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_line_handler(logger, level)
    if handler is None:
        logger.log(level, msg, extra={"fields": fields}, stacklevel=2)
        return
    handler.write_line(json_line(time.time(), logging.getLevelName(level), logger.name, msg, fields), level)


def flush_lines() -> None:
    """Write the lines the root handlers still hold, and from now on each line at once: the process is ending.

    For uvicorn's worker processes: they end by the SIGTERM uvicorn raises again after its shutdown, so
    logging's exit hook never runs, and uvicorn's last lines ("Application shutdown complete", "Finished
    server process") come after the lifespan that calls this."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BufferedLineHandler):
            handler.max_lines = 1
        handler.flush()


def configure(level: str) -> None:
    """Send the processor's and uvicorn's logs to stderr as JSON lines."""
    handler = BufferedLineHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
