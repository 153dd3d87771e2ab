"""Replay every stored event of one sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

from processor.db.pool import Database
from processor.eventlog.base import EventLog, Record, TopicPartition
from processor.operations import dlq as dlq_ops
from processor.operations.progress import Progress


async def records(
    log_: EventLog, db: Database, sandbox_id: str, bound: dict[TopicPartition, int], progress: Progress
) -> AsyncIterator[Record]:
    """Every record of the input topic keyed by the sandbox or by one of its accounts, or naming it."""
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT sandbox_account, owner_account FROM sandboxes WHERE id = $1", sandbox_id)
    keys = {sandbox_id.encode()}
    if row is not None:
        keys.update(a.encode() for a in (row["sandbox_account"], row["owner_account"]) if a)
    progress.total(sum(bound.values()))
    async for chunk in dlq_ops.read_partitions(log_, bound):
        for record in chunk:
            if record.key in keys or dlq_ops.sandbox_of(record) == sandbox_id:
                yield record
