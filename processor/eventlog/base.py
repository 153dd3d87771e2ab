"""The contract both event-log backends implement (ARCHITECTURE §3).

`publish` returns only once the record is durable (Kafka: acknowledged by all in-sync replicas; PostgreSQL:
committed). Consumers form groups, read partitions they own, and commit explicitly the offset of the next
record to read, so anything not committed is delivered again after a crash or a rebalance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple, Protocol

Headers = Sequence[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One record as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> str | None:
        """The last value of header `name`, decoded, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode()
        return None


class Published(NamedTuple):
    """Where a durable record landed (a NamedTuple: built once per webhook, where a frozen dataclass's
    `__init__` cost a busy ingress about a microsecond)."""

    topic: str
    partition: int
    offset: int


class LogConsumer(Protocol):
    """A member of a consumer group. Use `async with` or `start()`/`stop()` (both safe to call twice)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Up to `max_records` records from owned partitions, in offset order per partition."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offset to read per partition; raises CommitRejected if no longer owned."""
        ...

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for `tp`, None if it never committed."""
        ...

    def assignment(self) -> frozenset[TopicPartition]: ...

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read `tp` from `offset` on the next poll (replay); a partition not owned (any more) is left alone."""
        ...

    async def offsets_for_time(self, timestamp_ms: int) -> dict[TopicPartition, int]:
        """For each owned partition, the first offset whose timestamp is >= `timestamp_ms`."""
        ...

    def pause(self, *tps: TopicPartition) -> None:
        """Stop fetching `tps` until resumed; partitions not owned are skipped, and a partition that moves to
        another member and back starts unpaused."""
        ...

    def resume(self, *tps: TopicPartition) -> None: ...

    async def __aenter__(self) -> LogConsumer: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


class FencedPublisher(Protocol):
    """The writes of a role that one process at a time may hold (the outbox relay), fenced where they happen:
    once another holder claimed the role, every write of an earlier holder fails with Fenced and lands nothing
    (Kafka: a transactional producer whose transactional id is the role; PostgreSQL: the role's generation,
    checked in the transaction that inserts the records)."""

    async def claim(self) -> None:
        """Become the role's only writer; every earlier holder is fenced from now on."""
        ...

    async def publish_many(
        self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]
    ) -> list[Published]:
        """All `records` (ordered per key as given) durable and visible together, or none of them; raises Fenced
        when another holder claimed the role since this one did, LogUnavailable when the log failed."""
        ...

    async def close(self) -> None:
        """Release what the publisher holds (safe to call twice); the role stays claimed."""
        ...


class EventLog(Protocol):
    """A connection to the log: producing, topic management and consumer creation."""

    name: str  # "kafka" or "postgres", for health output and metrics

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> Published:
        """Append one record and return once it is durable; raises LogUnavailable otherwise."""
        ...

    async def publish_many(
        self, records: Sequence[tuple[str, bytes | None, bytes, Headers]]
    ) -> list[Published]:
        """Append several records (ordered per key as given) and return once all are durable."""
        ...

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics if missing (idempotent)."""
        ...

    def fenced_publisher(self, role: str) -> FencedPublisher:
        """A writer for `role` (unique per deployment: a topic prefix is part of it), not yet claimed."""
        ...

    def consumer(self, group: str, topics: Sequence[str], *, from_beginning: bool = True,
                 session_timeout_s: float | None = None) -> LogConsumer:
        """A new (not yet started) member of consumer group `group`; a silent member loses its partitions
        after `session_timeout_s` (backend default when None)."""
        ...

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The offset the next record of each partition of `topic` will get."""
        ...

    async def group_offsets(self, group: str, topic: str) -> dict[TopicPartition, int]:
        """What consumer group `group` has committed on each partition of `topic`, read from outside the group
        (partitions it never committed are left out)."""
        ...

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        """Records of one partition with start <= offset < end, outside any group (inspection, replay)."""
        ...

    def healthy(self) -> bool:
        """True while the producer side is connected."""
        ...

    async def __aenter__(self) -> EventLog: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...
