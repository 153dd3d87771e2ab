"""Replay a time window of the input topic (`--since`, `--until`)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

from processor.eventlog.base import EventLog, Record, TopicPartition
from processor.operations import dlq as dlq_ops
from processor.operations.progress import Progress

log = logging.getLogger(__name__)


async def records(
    log_: EventLog, since: datetime, until: datetime, bound: dict[TopicPartition, int], progress: Progress
) -> AsyncIterator[Record]:
    """The records logged between `since` and `until`, partition by partition, read up to the run's `bound`."""
    since_ms = int(since.timestamp() * 1000)
    until_ms = int(until.timestamp() * 1000)
    starts = {tp: await first_offset_at(log_, tp, end, since_ms) for tp, end in bound.items()}
    progress.total(sum(bound[tp] - starts[tp] for tp in bound))
    for tp in sorted(bound):
        async for chunk in dlq_ops.read_partitions(log_, {tp: bound[tp]}, {tp: starts[tp]}):
            for record in chunk:
                if record.timestamp_ms > until_ms:
                    break
                if record.timestamp_ms >= since_ms:
                    yield record
            else:
                continue
            break


async def first_offset_at(log_: EventLog, tp: TopicPartition, end: int, timestamp_ms: int) -> int:
    """The first offset below `end` whose record is at or after `timestamp_ms` (binary search; `end` if none).

    Group-less: `offsets_for_time` needs a group member owning the partition. Log timestamps are producer
    times, close to monotonic per partition; the window filter still checks each record.
    """
    low, high = 0, end
    started = time.monotonic()
    while low < high:
        mid = (low + high) // 2
        found = await log_.read(tp, mid, mid + 1)
        if not found or found[0].timestamp_ms < timestamp_ms:
            low = mid + 1
        else:
            high = mid
    log.debug("offset of %s at %d: %d (%.2fs)", tp, timestamp_ms, low, time.monotonic() - started)
    return low
