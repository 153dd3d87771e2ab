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

Events older than an answer Stripe already gave need no fetch either, whatever their type. A fetch shows the
sandbox as it is at that moment at Stripe, so it already shows every change behind an event created before
it. We keep, per sandbox, the newest answer whose state we applied (`Seen`: its state and its time, the
`Date` header of the answer, which is Stripe's clock like the event's `created`: no clock of ours is
compared with Stripe's). An event created at least `COVER_MARGIN` before that time is *covered*: it is behind
what we hold, and is applied as stale. In a backlog a sandbox is then fetched about once, whatever the batch
size: its later events, read in later batches, were all created before that fetch. Real-time events arrive
after the last fetch and are fetched as before.

- Where a covered event can go wrong: if Stripe's answer did not show its change after all (Stripe's `Date`
  and `created` come from different machines, the object is read before the answer is stamped, a read may
  trail a write), the sandbox stays behind until its next event or the reconciler. The margin is there for
  that. An answer without a `Date` (none from Stripe, a proxy that drops it) records no time, and then
  nothing is covered.
- Only an answer that was applied (advance or stale) is kept. An answer that was an anomaly changed nothing,
  so it covers nothing. Neither does a failed or a poison fetch, nor a state settled from event types alone.
- Redelivery: the time is written in the transaction that applies the answer, so a batch that never
  committed left no time behind. Its events are read again and fetched. Events that did commit come back
  as duplicates, before any of this.
- Replay (from the DLQ or from Stripe's Events API) re-sends old events. One created before the newest
  applied answer is covered: that answer came later than the event, and our state already holds it. A
  replayed event newer than every answer is fetched.
- The batch being prepared while the previous one commits (the consumer pipelines them) reads that batch's
  answers from memory, not from the table: they are not committed yet. If that batch does not commit a
  partition, the records of it in this batch are dropped and read again anyway.
- Monotonic rules: the state a covered event tells is the answer's, which the sandbox was in at or after the
  event. `decide` sees it equal to or behind what we hold (stale), as it would see the same answer fetched
  again. Two consumers during a rebalance each keep the later of the stored time and their own.

Every state observed this way is one the sandbox really was in at or after the event, so the monotonic rules
of `decide` keep it right even when our stored state was read a moment before another batch moved it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

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
#: how long before Stripe's answer an event must have been created for that answer to show it. It covers the
#: skew between Stripe's machines and a read that trails a write. A backlog's events are minutes older than
#: the fetch, so the margin costs nothing there.
COVER_MARGIN = timedelta(seconds=10)
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


@dataclass(frozen=True, slots=True)
class Seen:
    """The newest Stripe answer about a sandbox whose state we applied: that state, and the answer's time on
    Stripe's clock (its `Date` header)."""

    state: State
    at: datetime


class Event(Protocol):
    """What the rule reads of an event: its type and when Stripe created it."""

    @property
    def type(self) -> str: ...

    @property
    def created(self) -> datetime: ...


def covered(created: datetime, seen: Seen | None) -> bool:
    """Whether an event created at `created` is behind the answer `seen` (so that answer shows it)."""
    return seen is not None and created <= seen.at - COVER_MARGIN


def state_after(events: Sequence[Event], current: State | None, seen: Seen | None) -> State | None:
    """The state `events` of one sandbox show without a new fetch, given our `current` state (None: unknown)
    and the newest answer Stripe gave about it (`seen`); None when only a new fetch can tell."""
    fresh = [event.type for event in events if not covered(event.created, seen)]
    if events and not fresh and seen is not None:
        return seen.state  # every event is behind that answer, which already showed it
    return state_without_fetch(fresh, current)


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
