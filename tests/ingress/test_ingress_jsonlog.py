"""The ingress's JSON log lines: batched writes that still reach the stream promptly and completely."""

from __future__ import annotations

import io
import logging
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.ingress.jsonlog import BufferedLineHandler, JsonFormatter, iso_ms, json_line, log_fields


def make_logger(stream: io.StringIO, interval_s: float) -> tuple[logging.Logger, BufferedLineHandler]:
    handler = BufferedLineHandler(stream, flush_interval_s=interval_s, max_lines=1000)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.jsonlog.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def test_info_lines_are_written_within_the_flush_interval() -> None:
    """INFO lines are held briefly, then written as valid JSON lines with their fields."""
    stream = io.StringIO()
    logger, handler = make_logger(stream, interval_s=0.05)
    try:
        for i in range(3):
            logger.info("webhook delivery", extra={"fields": {"event_id": f"evt_{i}", "outcome": "accepted"}})
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["event_id"] for line in lines] == ["evt_0", "evt_1", "evt_2"]
        assert all(line["level"] == "INFO" and line["outcome"] == "accepted" for line in lines)
    finally:
        handler.close()


def test_warnings_are_written_at_once_and_close_flushes_the_rest() -> None:
    """A WARNING does not wait for the timer (and takes earlier lines with it); close() writes what is left."""
    stream = io.StringIO()
    logger, handler = make_logger(stream, interval_s=3600)
    logger.info("first")
    logger.warning("publish failed")
    assert [orjson.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["first", "publish failed"]
    logger.info("last")
    assert "last" not in stream.getvalue()
    handler.close()
    assert orjson.loads(stream.getvalue().splitlines()[-1])["msg"] == "last"


def test_log_fields_writes_the_line_a_log_record_would() -> None:
    """The per-request fast path and the ordinary logging call produce the same JSON (apart from the moment),
    levels below the logger's are dropped, and WARNING still goes out at once."""
    stream = io.StringIO()
    logger, handler = make_logger(stream, interval_s=3600)
    fields: dict[str, object] = {"event_id": "evt_1", "outcome": "accepted", "status": 200, "ms": 1.5}
    try:
        log_fields(logger, logging.INFO, "webhook delivery", fields)
        logger.info("webhook delivery", extra={"fields": fields})
        log_fields(logger, logging.DEBUG, "not written", {})
        log_fields(logger, logging.WARNING, "webhook delivery", {**fields, "outcome": "signature_mismatch"})
        fast, ordinary, warning = (orjson.loads(line) for line in stream.getvalue().splitlines())
    finally:
        handler.close()
    assert fast.pop("ts")[:19] == ordinary.pop("ts")[:19]
    assert fast == ordinary == {"level": "INFO", "logger": logger.name, "msg": "webhook delivery", **fields}
    assert warning["level"] == "WARNING" and warning["outcome"] == "signature_mismatch"


def test_log_fields_uses_ordinary_records_when_another_handler_listens(caplog: pytest.LogCaptureFixture) -> None:
    """With any other logging set-up (here pytest's capture) the fields arrive as a normal LogRecord."""
    logger = logging.getLogger("test.jsonlog.captured")
    with caplog.at_level(logging.INFO, logger=logger.name):
        log_fields(logger, logging.INFO, "webhook delivery", {"event_id": "evt_2"})
    [record] = [r for r in caplog.records if r.name == logger.name]
    assert record.getMessage() == "webhook delivery"
    assert record.fields == {"event_id": "evt_2"}  # type: ignore[attr-defined]


def test_lines_written_from_several_threads_during_flushes_are_each_written_once_in_order() -> None:
    """Writers append without the handler's lock while the flusher thread drains: nothing lost or doubled."""
    import threading

    stream = io.StringIO()
    handler = BufferedLineHandler(stream, flush_interval_s=0.001, max_lines=50)
    writers = [
        threading.Thread(target=lambda w=w: [handler.write_line(f"{w} {i}", logging.INFO) for i in range(5000)])
        for w in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 * 5000
    for w in range(4):
        assert [int(line.split()[1]) for line in lines if line.startswith(f"{w} ")] == list(range(5000))


_values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
_keys = st.sampled_from(["ts", "level", "logger", "msg", "event_id", "status"]) | st.text()


@given(
    created=st.floats(min_value=0, max_value=4_102_444_800),
    level=st.sampled_from(["INFO", "WARNING"]),
    logger=st.text(),
    msg=st.text(),
    fields=st.none() | st.dictionaries(_keys, _values, max_size=6),
)
def test_json_line_is_the_merged_dict_dumped(
    created: float, level: str, logger: str, msg: str, fields: dict[str, object] | None
) -> None:
    """The spliced line is byte for byte the line of one merged dict, escapes and overridden keys included."""
    merged = {"ts": iso_ms(created), "level": level, "logger": logger, "msg": msg, **(fields or {})}
    assert json_line(created, level, logger, msg, fields) == orjson.dumps(merged).decode()
