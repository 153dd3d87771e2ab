"""Which events settle a sandbox's state without a Stripe fetch, given the state we hold and the newest answer
Stripe gave about it (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from processor.lifecycle import State
from processor.lifecycle.without_fetch import COVER_MARGIN, Seen, state_after, state_without_fetch

P = "v2.core.claimable_sandbox."
CREATED, CLAIMED, UPDATED, EXPIRED = P + "created", P + "claimed", P + "updated", P + "expired"


@pytest.mark.parametrize(
    ("types", "current", "told"),
    [
        ([CREATED], None, State.UNCLAIMED),  # registered from the event alone
        ([CREATED], State.UNCLAIMED, State.UNCLAIMED),  # the API registered it already: stale
        ([CREATED], State.PENDING_INSTALL, State.PENDING_INSTALL),
        ([EXPIRED], None, State.EXPIRED),
        ([CREATED, EXPIRED], State.UNCLAIMED, State.EXPIRED),
        ([CLAIMED], State.INSTALLED, State.INSTALLED),  # a late claim: stale
        ([UPDATED, CLAIMED, CREATED], State.LIVE, State.LIVE),  # final: stale, whatever fits it
        ([EXPIRED, CREATED], State.EXPIRED, State.EXPIRED),
    ],
)
def test_settled_without_a_fetch(types: list[str], current: State | None, told: State) -> None:
    """Types that cannot change what we hold, or that only allow one state, need no fetch."""
    assert state_without_fetch(types, current) == told


@pytest.mark.parametrize(
    ("types", "current"),
    [
        ([CLAIMED], None),  # onboarding or install next: only Stripe knows
        ([CLAIMED], State.UNCLAIMED),
        ([UPDATED], State.PENDING_ONBOARDING),
        ([CREATED, UPDATED], State.UNCLAIMED),  # one event that needs Stripe: one fetch for all of them
        ([EXPIRED], State.CLAIMED),  # contradicts us: Stripe settles it (stale or anomaly)
        ([EXPIRED], State.LIVE),
        ([CLAIMED], State.EXPIRED),
        ([UPDATED], State.EXPIRED),
        ([], State.UNCLAIMED),
    ],
)
def test_fetched_when_only_stripe_can_tell(types: list[str], current: State | None) -> None:
    """The rest are fetched, contradictions of a final state included, so an anomaly is still caught."""
    assert state_without_fetch(types, current) is None


T = datetime(2026, 12, 2, 17, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ev:
    type: str
    created: datetime


def before(seconds: float) -> datetime:
    return T - timedelta(seconds=seconds)


@pytest.mark.parametrize("current", [State.UNCLAIMED, State.PENDING_INSTALL, None])
def test_events_older_than_a_stripe_answer_are_shown_by_it(current: State | None) -> None:
    """Events created well before Stripe's answer about their sandbox need no second fetch: they are behind
    what that answer showed, whatever their type."""
    seen = Seen(State.LIVE, T)
    events = [Ev(CLAIMED, before(600)), Ev(UPDATED, before(300)), Ev(UPDATED, T - COVER_MARGIN)]
    assert state_after(events, current, seen) is State.LIVE


def test_an_event_within_the_margin_of_the_answer_is_fetched() -> None:
    """An event created so shortly before the answer that Stripe's clocks or a trailing read could hide it
    from that answer is fetched, as every event after the answer is."""
    seen = Seen(State.CLAIMED, T)
    just_before = T - COVER_MARGIN + timedelta(milliseconds=1)
    assert state_after([Ev(UPDATED, before(600)), Ev(UPDATED, just_before)], State.CLAIMED, seen) is None
    assert state_after([Ev(UPDATED, T + timedelta(seconds=1))], State.CLAIMED, seen) is None


def test_without_an_answer_the_types_decide_as_before() -> None:
    """No Stripe answer known (or none with a time): the event types and our state decide alone."""
    assert state_after([Ev(UPDATED, before(600))], State.CLAIMED, None) is None
    assert state_after([Ev(CREATED, before(600))], None, None) is State.UNCLAIMED
    assert state_after([], State.UNCLAIMED, Seen(State.UNCLAIMED, T)) is None


def test_covered_events_and_newer_ones_that_the_types_settle() -> None:
    """Covered events drop out; the newer ones are settled by their types as before (a late `expired` of a
    sandbox held as unclaimed is final without a fetch)."""
    seen = Seen(State.UNCLAIMED, T)
    assert state_after([Ev(UPDATED, before(60)), Ev(EXPIRED, T + timedelta(seconds=30))], State.UNCLAIMED, seen) is (
        State.EXPIRED
    )
