"""The lifecycle at a glance for operators: how many sandboxes are in each state, how many move on, and when.

The console's overview reads these (as the CLI and `/v1/ops/*` read `status` and `inspect`); each is one
aggregate query on the lifecycle store's indexes, cheap enough to run on every page load.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from processor.db.pool import Database
from processor.lifecycle import State

#: the path a sandbox takes to go live, in order; a state's rank is its index (expired is off the path)
PATH: tuple[State, ...] = (
    State.UNCLAIMED,
    State.CLAIMED,
    State.PENDING_ONBOARDING,
    State.PENDING_INSTALL,
    State.INSTALLED,
    State.LIVE,
)
#: every state in the order operators read them
STATES: tuple[State, ...] = (*PATH, State.EXPIRED)


@dataclass(frozen=True, slots=True)
class Conversion:
    """Of the sandboxes that entered `source` in the window, how many have reached `target` (or beyond) since.

    States only move forward, so "reached `target` or a later state of the path" is read from the current
    state; a claim into an existing account skips pending_onboarding and still counts as reaching it."""

    source: State
    target: State
    entered: int
    reached: int

    @property
    def rate(self) -> float | None:
        """reached / entered, None when nothing entered."""
        return self.reached / self.entered if self.entered else None


@dataclass(frozen=True, slots=True)
class HourCount:
    """Transitions recorded in one hour, by the state entered."""

    hour: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def state_counts(db: Database) -> dict[str, int]:
    """How many sandboxes are in each state now (every state present, zero included)."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM sandboxes GROUP BY state")
    counts = {str(s): 0 for s in STATES}
    counts.update({r["state"]: int(r["n"]) for r in rows})
    return counts


async def conversions(db: Database, since: datetime) -> list[Conversion]:
    """For each step of the path, how many sandboxes that entered its first state since `since` reached its
    second (see `Conversion`)."""
    ranks = [str(s) for s in PATH]
    async with db.pool.acquire() as conn:
        # one row per (state entered in the window, rank of the sandbox's current state)
        rows = await conn.fetch(
            "SELECT h.to_state, array_position($2::text[], s.state) AS rank, count(*) AS n"
            " FROM sandbox_history h JOIN sandboxes s ON s.id = h.sandbox_id"
            " WHERE h.kind = 'transition' AND coalesce(h.occurred_at, h.recorded_at) >= $1"
            " AND h.to_state = ANY($2::text[]) GROUP BY h.to_state, rank",
            since,
            ranks,
        )
    found: list[Conversion] = []
    for index, (source, target) in enumerate(itertools.pairwise(PATH)):
        entered = reached = 0
        for row in rows:
            if row["to_state"] != source:
                continue
            entered += int(row["n"])
            # array_position is 1-based; an expired sandbox has no rank (NULL) and never reached the target
            if row["rank"] is not None and row["rank"] - 1 >= index + 1:
                reached += int(row["n"])
        found.append(Conversion(source, target, entered, reached))
    return found


async def transitions_per_hour(db: Database, since: datetime, until: datetime) -> list[HourCount]:
    """Transitions per hour from `since` to `until` (every hour present, empty ones included), by state entered."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT date_trunc('hour', coalesce(occurred_at, recorded_at), 'UTC') AS hour, to_state, count(*) AS n"
            " FROM sandbox_history WHERE kind = 'transition' AND coalesce(occurred_at, recorded_at) >= $1"
            " AND coalesce(occurred_at, recorded_at) < $2 GROUP BY hour, to_state",
            since,
            until,
        )
    start = since.replace(minute=0, second=0, microsecond=0)
    hours: dict[datetime, dict[str, int]] = {}
    moment = start
    while moment < until:
        hours[moment] = {}
        moment += timedelta(hours=1)
    for row in rows:
        bucket = hours.setdefault(row["hour"], {})
        bucket[row["to_state"]] = int(row["n"])
    return [HourCount(hour, counts) for hour, counts in sorted(hours.items())]


async def events_by_outcome(db: Database, since: datetime) -> dict[str, int]:
    """Events the consumer (and reconcile) finished since `since`, by outcome (applied, stale, notice, ...)."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT outcome, count(*) AS n FROM processed_events WHERE processed_at >= $1 GROUP BY outcome"
            " ORDER BY n DESC, outcome",
            since,
        )
    return {r["outcome"]: int(r["n"]) for r in rows}
