"""What a sandbox's thin events settle without asking Stripe: each fetch spends the key's scarce rate budget.

A thin event carries only its type, and its type plus the state we already hold often settles the state:

- `created`: the sandbox was unclaimed. Known sandboxes (the API registered every sandbox it created) are
  at least that, so it is stale; an unknown one is registered as unclaimed from the event alone. Its Stripe
  fields (accounts, `livemode`, `expires_at`) stay null until the next fetch: the `claimed` event's, or the
  reconciler's, which visits unclaimed sandboxes that have not moved for an hour. Only account events naming
  the sandbox's own account could need them earlier, and those wait in `account_events` until it is known.
- `expired`: final, and reachable from unclaimed alone, so a sandbox we hold as unclaimed (or do not know)
  is expired by the event. Held as claimed or further, the event contradicts us: fetched, so Stripe settles
  it (stale if Stripe agrees with us, an anomaly dead-lettered otherwise, as before).
- `claimed` of a sandbox we already hold as claimed or further: a late delivery, stale. Otherwise it is
  fetched: only Stripe knows whether onboarding or the app install comes next.
- `updated`: only Stripe knows what changed: fetched.
- `expiring` is a notice and never reached this far (`inbound` files it apart).
- A sandbox in a final state (`live`, `expired`) cannot move, so any event that fits it is stale without a
  fetch. The ones that contradict it (`expired` after `live`; `claimed`/`updated` after `expired`) are fetched:
  they are rare, and the fetch catches an anomaly the moment it shows, as before. What no event shows (Stripe
  changing a final sandbox silently) no webhook processor can see; the reconciler covers the non-final ones.

Every state observed this way is one the sandbox really was in at or after the event, so the monotonic rules
of `decide` keep it right even when our stored state was read a moment before another batch moved it.
"""

from __future__ import annotations

from collections.abc import Iterable

from processor.lifecycle.state import State

PREFIX = "v2.core.claimable_sandbox."
CREATED = PREFIX + "created"
CLAIMED = PREFIX + "claimed"
EXPIRED = PREFIX + "expired"

FINAL = frozenset({State.LIVE, State.EXPIRED})
#: the states of a sandbox somebody claimed (a late `claimed` event is stale for all of them)
CLAIMED_OR_FURTHER = frozenset(
    {State.CLAIMED, State.PENDING_ONBOARDING, State.PENDING_INSTALL, State.INSTALLED, State.LIVE}
)
#: event types that cannot follow each final state: the sandbox would have moved, which it cannot
_CONTRADICTS = {State.LIVE: frozenset({EXPIRED}), State.EXPIRED: frozenset({CLAIMED, PREFIX + "updated"})}


def state_without_fetch(event_types: Iterable[str], current: State | None) -> State | None:
    """The state these events of one sandbox show, given our `current` one (None: unknown); None when only a
    fetch from Stripe can tell."""
    told: list[State] = []
    for event_type in event_types:
        state = _one(event_type, current)
        if state is None:
            return None
        told.append(state)
    if not told:
        return None
    if State.EXPIRED in told:
        return State.EXPIRED
    return current if current is not None else State.UNCLAIMED


def _one(event_type: str, current: State | None) -> State | None:
    if current is not None and current in FINAL:
        return None if event_type in _CONTRADICTS[current] else current
    if event_type == CREATED:
        return current or State.UNCLAIMED
    if event_type == EXPIRED:
        return State.EXPIRED if current in (None, State.UNCLAIMED) else None
    if event_type == CLAIMED and current in CLAIMED_OR_FURTHER:
        return current
    return None
