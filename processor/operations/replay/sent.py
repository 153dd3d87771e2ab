"""What a replay run has sent, so it sends each event once, holding no more than one partition's worth of ids.

A run reads its source partition by partition. Every copy of one event carries the same key (the key is made
from the event), and one key lands in one partition, so a second copy of an event is only ever found in the
partition of the first: what was sent is forgotten when the source moves to the next partition. A run over a
log of a million records then holds the ids of one partition, not of all of them (a fuzz run saw the RSS of
`processor run` follow these sets as its DLQ grew). Candidates without a partition (Stripe's Events API) are
remembered for the whole run. Should a copy still turn up in another partition (its topic was given more
partitions meanwhile), it is published again and the consumer drops it as a duplicate by its event id.

A resumed run also knows what its earlier attempts published (read back from the log); that is kept whole.
"""

from __future__ import annotations

from processor.operations.replay.copies import Candidate


class SentSoFar:
    """The identities and event ids a run published: earlier attempts' whole, this attempt's per partition."""

    def __init__(self, earlier_identities: set[str] | None = None, earlier_events: set[str] | None = None) -> None:
        self._earlier_identities = earlier_identities or set()
        self._earlier_events = earlier_events or set()
        self._identities: set[str] = set()
        self._events: set[str] = set()
        self._partition: int | None = None

    def seen(self, candidate: Candidate) -> bool:
        """True if this run already published `candidate`'s record or another copy of its event."""
        self._enter(candidate.partition)
        if candidate.identity in self._earlier_identities or candidate.identity in self._identities:
            return True
        event_id = candidate.event_id
        return bool(event_id) and (event_id in self._events or event_id in self._earlier_events)

    def add(self, candidate: Candidate) -> None:
        """Remember `candidate` as published: by its event id, which also covers a second copy of the same
        record (overlapping offset ranges), or by its identity when it has none."""
        self._enter(candidate.partition)
        if candidate.event_id:
            self._events.add(candidate.event_id)
        else:
            self._identities.add(candidate.identity)

    def _enter(self, partition: int | None) -> None:
        if partition is not None and partition != self._partition:
            self._identities, self._events, self._partition = set(), set(), partition
