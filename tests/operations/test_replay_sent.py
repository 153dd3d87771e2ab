"""A replay run sends each event once while holding the ids of one partition only (replay/sent.py)."""

from __future__ import annotations

from processor.operations.replay.copies import Candidate
from processor.operations.replay.sent import SentSoFar


def candidate(partition: int | None, offset: int, event_id: str | None) -> Candidate:
    return Candidate(f"events:{partition}:{offset}", event_id, "v2.core.claimable_sandbox.updated", b"csb_1", b"{}",
                     (), partition=partition)


def test_a_second_copy_of_an_event_in_its_partition_is_seen() -> None:
    """Two copies of one event (and one record read twice, overlapping ranges) are sent once."""
    sent = SentSoFar()
    first, again, other = candidate(0, 1, "evt_1"), candidate(0, 7, "evt_1"), candidate(0, 8, "evt_2")
    assert not sent.seen(first)
    sent.add(first)
    assert sent.seen(again) and not sent.seen(other)
    no_id = candidate(0, 9, None)
    sent.add(no_id)
    assert sent.seen(candidate(0, 9, None)) and not sent.seen(candidate(0, 10, None))


def test_the_next_partition_starts_afresh_but_earlier_attempts_are_kept() -> None:
    """Moving to the next partition forgets this attempt's ids (memory of one partition), never what an
    earlier attempt of a resumed run published."""
    sent = SentSoFar(earlier_identities={"events:3:5"}, earlier_events={"evt_earlier"})
    sent.add(candidate(0, 1, "evt_1"))
    assert not sent.seen(candidate(1, 1, "evt_1"))  # another partition: a copy there is another key's event
    assert sent.seen(candidate(1, 2, "evt_earlier")) and sent.seen(candidate(3, 5, None))
    assert sent.seen(candidate(2, 1, "evt_earlier"))


def test_candidates_from_outside_the_log_are_remembered_for_the_whole_run() -> None:
    """Stripe's events (no partition) are deduplicated across the whole run."""
    sent = SentSoFar()
    sent.add(candidate(None, 0, "evt_stripe"))
    assert sent.seen(candidate(None, 1, "evt_stripe"))
