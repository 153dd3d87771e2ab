"""What operators ask a replay for (`ReplayRequest`) and what it tells them (`ReplayReport`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import orjson

from processor.operations import dlq as dlq_ops
from processor.operations.timespec import parse_moment

#: Stripe keeps events for 30 days
STRIPE_RETENTION = timedelta(days=30)
Source = Literal["dlq", "window", "offsets", "sandbox", "stripe"]
SOURCES: tuple[Source, ...] = ("dlq", "window", "offsets", "sandbox", "stripe")


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets `start <= o < end` of one partition of the input topic; `end=None` up to the run's start."""

    partition: int
    start: int
    end: int | None = None


def parse_offsets(text: str) -> tuple[OffsetRange, ...]:
    """`0:100-200,1:5-` (partition:start-end, end exclusive and optional); ValueError otherwise."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, sep, span = part.partition(":")
        start, dash, end = span.partition("-")
        if not sep or not dash or not partition.isdigit() or not start.isdigit() or not (end == "" or end.isdigit()):
            raise ValueError(f"{part!r} is not partition:start-end (e.g. 0:100-200 or 0:100-)")
        ranges.append(OffsetRange(int(partition), int(start), int(end) if end else None))
    if not ranges:
        raise ValueError("no offsets given")
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay. Times are what operators type (`3d`, an RFC 3339 time); they are fixed when a run starts."""

    source: Source
    dlq: dlq_ops.DlqFilter = field(default_factory=dlq_ops.DlqFilter)
    since: str | None = None
    until: str | None = None
    offsets: tuple[OffsetRange, ...] = ()
    sandbox_id: str | None = None

    def validate(self) -> None:
        """ValueError naming what is missing or contradictory."""
        if self.source in ("window", "stripe") and self.since is None:
            raise ValueError(f"a {self.source} replay needs --since")
        if self.source == "offsets" and not self.offsets:
            raise ValueError("an offsets replay needs --offsets")
        if self.source == "sandbox" and not self.sandbox_id:
            raise ValueError("a sandbox replay needs the sandbox id")
        for text in (self.since, self.until):
            if text is not None:
                parse_moment(text)

    def spec(self) -> dict[str, Any]:
        """The request as typed: what identifies a run (the same spec resumes the same unfinished run)."""
        return {
            "source": self.source,
            "dlq": {
                "error_class": self.dlq.error_class,
                "event_type": self.dlq.event_type,
                "sandbox_id": self.dlq.sandbox_id,
                # only when chosen, so the run ids of filter-only requests stay what they were
                **({"coordinates": sorted(self.dlq.coordinates)} if self.dlq.coordinates else {}),
            }
            if self.source == "dlq"
            else None,
            "since": self.since,
            "until": self.until,
            "offsets": [[r.partition, r.start, r.end] for r in self.offsets],
            "sandbox_id": self.sandbox_id,
        }

    def default_run_id(self) -> str:
        digest = hashlib.sha256(orjson.dumps(self.spec(), option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"replay-{self.source}-{digest[:12]}"


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (or, dry, would do)."""

    run_id: str
    source: str
    dry_run: bool
    resumed: bool = False
    read: int = 0
    replayed: int = 0
    skipped_processed: int = 0
    #: re-published earlier by this run (a resumed run), or a second copy of an event this run already sent
    skipped_replayed: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "read": self.read,
            "replayed": self.replayed,
            "skipped_processed": self.skipped_processed,
            "skipped_replayed": self.skipped_replayed,
            "window": self.window,
            **({"would_replay": self.listed} if self.dry_run else {}),
        }
