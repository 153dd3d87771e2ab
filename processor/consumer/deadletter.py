"""Dead-letter records: the input record unchanged (key, value, headers) plus the error headers of §6."""

from __future__ import annotations

from datetime import UTC, datetime

from processor import constants as c
from processor.errors import ProcessorError
from processor.eventlog.base import Headers, Record
from processor.lifecycle.messages import rfc3339

#: a DLQ header carries a summary, not an essay; the full reason is in the consumer's log
MAX_MESSAGE_CHARS = 1000


def dlq_headers(record: Record, error: ProcessorError, attempts: int, failed_at: datetime | None = None) -> Headers:
    """The input's own headers (a replayed DLQ record's old error headers dropped) followed by the error's."""
    kept = [(name, value) for name, value in record.headers if name not in c.DLQ_ERROR_HEADERS]
    moment = failed_at or datetime.now(UTC)
    return (
        *kept,
        (c.H_ERROR_CLASS, error.code.encode()),
        (c.H_ERROR_MESSAGE, str(error)[:MAX_MESSAGE_CHARS].encode()),
        (c.H_FAILED_AT, rfc3339(moment).encode()),
        (c.H_ATTEMPTS, str(max(1, attempts)).encode()),
        (c.H_ORIGINAL_TOPIC, record.topic.encode()),
        (c.H_ORIGINAL_PARTITION, str(record.partition).encode()),
        (c.H_ORIGINAL_OFFSET, str(record.offset).encode()),
    )


def dlq_record(
    topic: str, record: Record, error: ProcessorError, attempts: int
) -> tuple[str, bytes | None, bytes, Headers]:
    """What `EventLog.publish_many` takes to dead-letter `record` on `topic`."""
    return topic, record.key, record.value, dlq_headers(record, error, attempts)
