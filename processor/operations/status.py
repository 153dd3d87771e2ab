"""Has the processor caught up? Consumer lag per partition of stripe.events and outbox rows not yet published.

"Caught up" means everything the ingress accepted so far has been applied (or dead-lettered: the lifecycle
group committed every partition to its end) and every message that produced has been published (no pending
outbox row). The same answer backs `processor status`, `GET /v1/ops/status` and the workers' gauges, and it
is cheap: two small reads of the log and one count in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processor import constants as c
from processor.db.pool import Database
from processor.eventlog.base import EventLog
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings
from processor.stripe_api.budget import read_budget

log = logging.getLogger(__name__)

#: how often the workers refresh the lag and outbox gauges: a dashboard or an alert sees a backlog within seconds
REFRESH_INTERVAL_S = 3.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of stripe.events: where the log ends and how far the lifecycle group has committed."""

    partition: int
    end: int
    committed: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True, slots=True)
class Status:
    backend: str
    topic: str
    group: str
    partitions: tuple[PartitionLag, ...]
    outbox_pending: int

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def caught_up(self) -> bool:
        return self.lag == 0 and self.outbox_pending == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "caught_up": self.caught_up,
            "backend": self.backend,
            "topic": self.topic,
            "group": self.group,
            "lag": self.lag,
            "outbox_pending": self.outbox_pending,
            "partitions": [
                {"partition": p.partition, "end": p.end, "committed": p.committed, "lag": p.lag}
                for p in self.partitions
            ],
        }

    def describe(self) -> str:
        """A few lines for a terminal."""
        lines = [f"{self.topic} (group {self.group}, {self.backend} log)", "  partition        end  committed     lag"]
        lines += [f"  {p.partition:>9} {p.end:>10} {p.committed:>10} {p.lag:>7}" for p in self.partitions]
        lines.append(f"outbox rows not yet published: {self.outbox_pending}")
        lines.append("caught up" if self.caught_up else f"behind: lag {self.lag}, outbox {self.outbox_pending}")
        return "\n".join(lines)


async def outbox_pending(db: Database) -> int:
    """Outbox rows the relay has not published yet."""
    async with db.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def consumer_lag(settings: Settings, log_: EventLog) -> tuple[PartitionLag, ...]:
    """Per partition of stripe.events: log end and the lifecycle group's committed offset (0 if none yet)."""
    topic = settings.topic(c.TOPIC_EVENTS)
    ends = await log_.end_offsets(topic)
    committed = await log_.group_offsets(settings.topic(c.GROUP_LIFECYCLE), topic)
    return tuple(
        PartitionLag(tp.partition, end, committed.get(tp, 0)) for tp, end in sorted(ends.items())
    )


async def log_position(settings: Settings, log_: EventLog) -> dict[int, int]:
    """Where each partition of stripe.events ends now: `wait_applied` waits for the consumer to pass it."""
    return {tp.partition: end for tp, end in (await log_.end_offsets(settings.topic(c.TOPIC_EVENTS))).items()}


async def wait_applied(
    settings: Settings, log_: EventLog, position: Mapping[int, int], *, interval_s: float = 1.0
) -> None:
    """Return once the lifecycle group has committed every partition up to `position` (`log_position`): every
    event the log held then is applied or dead-lettered. Waits as long as it takes; cancel it to give up."""
    while True:
        committed = {p.partition: p.committed for p in await consumer_lag(settings, log_)}
        if all(committed.get(partition, 0) >= end for partition, end in position.items()):
            return
        await asyncio.sleep(interval_s)


async def read_status(settings: Settings, log_: EventLog, db: Database) -> Status:
    """Lag and pending outbox rows, now."""
    partitions = await consumer_lag(settings, log_)
    return Status(
        backend=log_.name,
        topic=settings.topic(c.TOPIC_EVENTS),
        group=settings.topic(c.GROUP_LIFECYCLE),
        partitions=partitions,
        outbox_pending=await outbox_pending(db),
    )


async def wait_caught_up(
    settings: Settings, log_: EventLog, db: Database, timeout_s: float, *, interval_s: float = 0.5
) -> Status:
    """Poll until caught up and return that status; TimeoutError (carrying the last status) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await read_status(settings, log_, db)
        if status.caught_up:
            return status
        if time.monotonic() >= deadline:
            raise NotCaughtUp(status, timeout_s)
        await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


class NotCaughtUp(TimeoutError):
    """The processor was still behind when the wait ran out."""

    def __init__(self, status: Status, timeout_s: float) -> None:
        super().__init__(
            f"not caught up after {timeout_s:g}s: consumer lag {status.lag}, "
            f"{status.outbox_pending} outbox rows not yet published"
        )
        self.status = status


async def refresh_gauges(
    settings: Settings, log_: EventLog, db: Database, metrics: WorkerMetrics, stop: asyncio.Event,
    interval_s: float = REFRESH_INTERVAL_S,
) -> None:
    """Keep the group lag per partition, the pending outbox and the Stripe budget gauges current until `stop`
    is set."""
    while not stop.is_set():
        try:
            status = await read_status(settings, log_, db)
            budget = await read_budget(settings, db.pool)
        except Exception as exc:  # a gauge must never take the worker down; the debug log says why
            log.debug("status gauges not refreshed: %s", exc)
        else:
            for part in status.partitions:
                metrics.group_lag.labels(partition=str(part.partition)).set(part.lag)
            metrics.outbox_pending.set(status.outbox_pending)
            if budget is not None:
                metrics.budget.show(budget)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
