"""Replay explicit offsets of the input topic (`0:100-200,1:5-`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from processor.eventlog.base import EventLog, Record, TopicPartition
from processor.operations import dlq as dlq_ops
from processor.operations.progress import Progress
from processor.operations.replay.request import OffsetRange


async def records(
    log_: EventLog, offsets: Sequence[OffsetRange], bound: dict[TopicPartition, int], progress: Progress
) -> AsyncIterator[Record]:
    """The records of each range, read up to the run's `bound` (an open range ends there)."""
    ranges = {}
    for r in offsets:
        tp = next((tp for tp in bound if tp.partition == r.partition), None)
        if tp is None:
            raise ValueError(f"the input topic has no partition {r.partition}")
        ranges[(tp, r.start)] = min(bound[tp], r.end if r.end is not None else bound[tp])
    progress.total(sum(max(0, end - start) for (_, start), end in ranges.items()))
    for (tp, start), end in ranges.items():
        async for chunk in dlq_ops.read_partitions(log_, {tp: end}, {tp: start}):
            for record in chunk:
                yield record
