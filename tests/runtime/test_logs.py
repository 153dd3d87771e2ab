"""The log set-up every command shares: JSON lines by default, written by logging's QueueListener thread so a
slow stderr never stalls the caller, and nothing lost when the process ends."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator

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
