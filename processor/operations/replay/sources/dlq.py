"""Replay from the DLQ: a copy of every dead-lettered record the filter selects (not yet resolved)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.operations import dlq as dlq_ops
from processor.operations.replay.copies import Candidate, copy_record
from processor.settings import Settings


async def candidates(
    settings: Settings, log_: EventLog, db: Database, dlq_filter: dlq_ops.DlqFilter, run_id: str
) -> AsyncIterator[Candidate]:
    """The DLQ's records as copies for run `run_id`; each knows its DLQ entry, marked resolved once sent."""
    async for entries in dlq_ops.dlq_entries(settings, log_, db, dlq_filter):
        for entry in entries:
            candidate = copy_record(entry.record, f"dlq:{entry.coordinate}", run_id)
            candidate.entry = entry
            yield candidate
