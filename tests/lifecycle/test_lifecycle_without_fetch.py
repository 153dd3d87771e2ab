"""Which events settle a sandbox's state without a Stripe fetch, given the state we hold (pure logic)."""

from __future__ import annotations

import pytest

from processor.lifecycle import State
from processor.lifecycle.without_fetch import state_without_fetch

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
