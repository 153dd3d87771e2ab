"""The replay runs any interface started, as operators list them (the console, the HTTP API)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from processor.db.pool import Database
from processor.operations.replay.run import LOCK_SPACE


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """A replay run as any interface started it: its request, counts so far and whether it is running now."""

    run_id: str
    source: str
    params: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    #: a process holds the run's lock right now (unfinished and not running = interrupted, resumable)
    running: bool

    @property
    def status(self) -> str:
        return "finished" if self.finished_at else "running" if self.running else "interrupted"


async def list_replay_runs(db: Database, *, limit: int = 50, run_id: str | None = None) -> list[ReplayRun]:
    """The newest replay runs (or the one named `run_id`), running ones told apart by their advisory lock."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT r.run_id, r.source, r.params, r.started_at, r.finished_at, r.counts,"
            " EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = $1"
            "  AND l.objid = hashtext(r.run_id)::oid AND l.objsubid = 2 AND l.granted) AS running"
            " FROM replay_runs r WHERE ($3::text IS NULL OR r.run_id = $3)"
            " ORDER BY r.finished_at IS NOT NULL, r.started_at DESC LIMIT $2",
            LOCK_SPACE,
            limit,
            run_id,
        )
    return [
        ReplayRun(
            r["run_id"],
            r["source"],
            orjson.loads(r["params"]),
            r["started_at"],
            r["finished_at"],
            orjson.loads(r["counts"]) if r["counts"] else {},
            bool(r["running"]) and r["finished_at"] is None,
        )
        for r in rows
    ]
