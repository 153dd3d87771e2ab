"""One batch of the lifecycle consumer applied in ONE PostgreSQL transaction (ARCHITECTURE §6).

State, history, processed events and outbox rows commit together or not at all, so a crash anywhere leaves
either the whole batch applied (its redelivery is then a no-op) or nothing. Writers of one sandbox serialise
on an advisory lock taken in a fixed order, so two consumers that both hold a redelivered record (during a
rebalance) cannot interleave, and the outbox ids of one sandbox are in commit order, which the relay relies on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from processor.constants import H_STATE_VERSION
from processor.consumer.flags import FLAG_DEAUTHORIZED, apply_kept_events, index_by_account, keep_events, set_flag
from processor.consumer.handlers import (
    AnomalyRow,
    CountOnEntry,
    HistoryOnEntry,
    HistoryRow,
    OutboxRow,
    ProcessedRow,
    PublishOnEntry,
    Reporting,
    Writes,
    content_type_headers,
)
from processor.consumer.inbound import Inbound
from processor.consumer.store import SandboxRow, lock_and_read, write_batch
from processor.db.pool import DATABASE_ERRORS, Connection
from processor.errors import Anomaly, DatabaseUnavailable, PoisonEvent
from processor.lifecycle import Decision, Outcome, State, decide, stripe_fields
from processor.lifecycle.messages import SNAPSHOT_CONTENT_TYPE, state_snapshot
from processor.lifecycle.walk import walk
from processor.lifecycle.without_fetch import Seen

#: sandboxes decided between two turns of the event loop. The statechart costs 0.5-3 ms per sandbox, so a
#: 2,000-event batch decided in one go held the loop for 5-13 s on a loaded machine: the next batch, fetched
#: meanwhile, sent no Stripe request and the key's budget went unused (bench/stripe_budget.py, backlog part);
#: with slices of 16 its poll still waited seconds behind them. Slices of 4 cost a few microseconds each.
DECIDE_SLICE = 4


@dataclass(slots=True)
class Observation:
    """A sandbox fetched once for all of its observation events in the batch, or settled by them alone."""

    sandbox_id: str
    events: list[Inbound]
    #: None when the events and our stored state settled the state without a fetch (`without_fetch`)
    fetched: Mapping[str, Any] | None
    observed: State
    #: Stripe's time of the fetch (its answer's `Date`); None without a fetch or without a Date
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """A sandbox as we hold it: its state, and Stripe's time of the newest fetch applied to it."""

    state: State
    observed_at: datetime | None

    def seen(self) -> Seen | None:
        """The newest applied Stripe answer, if one came with a time."""
        return None if self.observed_at is None else Seen(self.state, self.observed_at)


@dataclass(frozen=True, slots=True)
class Repair:
    """A change a repair pass made that webhooks should have made: `kind` is "state" or "flag"."""

    sandbox_id: str | None
    kind: str
    detail: str


@dataclass(slots=True)
class BatchResult:
    """What applying a batch did: outcome per event, transitions per target state, the poison events, and
    (in a repair pass) the repairs made."""

    outcomes: Counter[str] = field(default_factory=Counter)
    transitions: Counter[str] = field(default_factory=Counter)
    poison: list[tuple[Inbound, PoisonEvent]] = field(default_factory=list)
    outbox_rows: int = 0
    repairs: list[Repair] = field(default_factory=list)


def _latest(events: Iterable[Inbound]) -> Inbound:
    # the newest event is the one whose fetch revealed the state (ties: the later record)
    return max(events, key=lambda e: (e.created, e.record.offset))


class Applier:
    """Applies batches to the database; `topic_transitions`/`topic_state` are the full (prefixed) names."""

    def __init__(self, pool: asyncpg.Pool, topic_transitions: str, topic_state: str) -> None:
        self.pool = pool
        self.topic_transitions = topic_transitions
        self.topic_state = topic_state

    async def already_processed(self, event_ids: Sequence[str]) -> set[str]:
        """The ids among `event_ids` that an earlier batch applied."""
        sql = "SELECT event_id FROM processed_events WHERE event_id = ANY($1)"
        return {row["event_id"] for row in await self._rows(sql, event_ids, "processed events")}

    async def states(self, sandbox_ids: Sequence[str]) -> dict[str, Held]:
        """How we hold each of `sandbox_ids` we know."""
        sql = "SELECT id, state, observed_at FROM sandboxes WHERE id = ANY($1)"
        rows = await self._rows(sql, sandbox_ids, "sandbox states")
        return {row["id"]: Held(State(row["state"]), row["observed_at"]) for row in rows}

    async def _rows(self, sql: str, ids: Sequence[str], what: str) -> list[asyncpg.Record]:
        """The rows `sql` selects for `ids` (its $1); DatabaseUnavailable says `what` could not be read."""
        if not ids:
            return []
        try:
            async with self.pool.acquire() as conn:
                return list(await conn.fetch(sql, list(ids)))
        except DATABASE_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot read {what}: {exc}") from exc

    async def apply(
        self,
        observations: Sequence[Observation],
        notices: Sequence[Inbound],
        account_events: Sequence[Inbound],
        *,
        repair: str | None = None,
    ) -> BatchResult:
        """Apply one batch in one transaction; DatabaseUnavailable (retriable) when PostgreSQL fails.

        `repair` names a repair pass (reconcile): every state it moves and every account event it applies is
        also recorded as a `repair` history row with this label, and listed in the result."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await self._apply(conn, observations, notices, account_events, repair)
        except DATABASE_ERRORS as exc:
            # any database failure is retried: the batch is either wholly applied or not at all
            raise DatabaseUnavailable(f"the lifecycle transaction failed: {exc}") from exc

    async def _apply(
        self,
        conn: Connection,
        observations: Sequence[Observation],
        notices: Sequence[Inbound],
        account_events: Sequence[Inbound],
        repair: str | None,
    ) -> BatchResult:
        result = BatchResult()
        writes = Writes()
        ids = {o.sandbox_id for o in observations} | {str(n.sandbox_id) for n in notices}
        accounts = sorted({str(e.account) for e in account_events})
        if accounts:
            matched = await conn.fetch(
                "SELECT id FROM sandboxes WHERE sandbox_account = ANY($1) OR owner_account = ANY($1)", accounts
            )
            ids.update(row["id"] for row in matched)
        rows = await lock_and_read(conn, ids)

        known = {row.id: row.accounts for row in rows.values()}
        for index, observation in enumerate(observations, 1):
            self._observe(observation, rows, writes, result, repair)
            if index % DECIDE_SLICE == 0:
                await asyncio.sleep(0)  # let the fetches of the batch being prepared go on (DECIDE_SLICE)
        for notice in notices:
            self._notice(notice, writes, result)
        by_account = index_by_account(rows.values())
        await apply_kept_events(conn, rows.values(), known, by_account, writes)
        for event in sorted(account_events, key=lambda e: (e.created, e.record.offset)):
            self._account(event, by_account.get(str(event.account), []), writes, result, repair)
        await keep_events(conn, account_events)

        for row in rows.values():
            if row.dirty:
                self._snapshot(row, writes)
        await write_batch(conn, [r for r in rows.values() if r.dirty or r.touched], writes)
        result.outbox_rows = len(writes.outbox)
        return result

    def _observe(
        self, obs: Observation, rows: dict[str, SandboxRow], writes: Writes, result: BatchResult, repair: str | None
    ) -> None:
        row = rows.get(obs.sandbox_id)
        decision = decide(row.state if row else None, obs.observed)
        reporting = _latest(obs.events)
        if decision.outcome is Outcome.ANOMALY:
            self._anomaly(obs, row, decision.reason or "", writes, result)
            return
        if decision.outcome is Outcome.ADVANCE:
            row = self._advance(obs, row, decision, writes, result, repair)
            rows[obs.sandbox_id] = row
            outcome = "applied"
        elif row is None:  # decide() never calls an observation of an unknown sandbox stale
            raise ValueError(f"stale observation of unknown sandbox {obs.sandbox_id}")
        else:
            self._stale(obs, row, decision, writes)
            outcome = "stale"
        fields = _fields(obs, row)
        if row.stripe != fields:
            row.stripe = fields
            row.dirty = True
        if row.dirty:
            row.last_event_id = reporting.event_id
        _note_answer_time(obs, row)
        for event in obs.events:
            writes.processed.append(ProcessedRow(event.event_id, event.type, obs.sandbox_id, outcome))
            result.outcomes[outcome] += 1

    def _advance(
        self,
        obs: Observation,
        row: SandboxRow | None,
        decision: Decision,
        writes: Writes,
        result: BatchResult,
        repair: str | None,
    ) -> SandboxRow:
        """Walk the sandbox through the decided steps (a new sandbox gets its row); return its row."""
        before = row.state if row else None
        if row is None:
            row = SandboxRow(
                id=obs.sandbox_id,
                state=State.UNCLAIMED,
                sequence=0,
                flags={FLAG_DEAUTHORIZED: False},
                flags_as_of_ms=0,
                stripe=None,
                version=0,
                last_event_id=None,
            )
        if repair is not None:
            self._repaired(obs, before, repair, writes, result)
        reporting = _latest(obs.events)
        by = Reporting(reporting.event_id if reporting.from_stripe else None, reporting.type, reporting.created)
        handlers = (
            HistoryOnEntry(obs.sandbox_id, by, writes),
            PublishOnEntry(obs.sandbox_id, by, writes, self.topic_transitions),
            CountOnEntry(result.transitions),
        )
        # the statechart executes every step (inferred ones included); the handlers are its reactions
        row.sequence = walk(before, decision.steps, row.sequence, handlers)
        row.state = decision.steps[-1].to_state
        row.dirty = True
        return row

    @staticmethod
    def _stale(obs: Observation, row: SandboxRow, decision: Decision, writes: Writes) -> None:
        """An observation behind what we know: each of its events gets a `stale` history row."""
        for event in obs.events:
            writes.history.append(
                HistoryRow(
                    sandbox_id=obs.sandbox_id,
                    kind="stale",
                    from_state=str(row.state),
                    to_state=str(obs.observed),
                    observed=True,
                    sequence=None,
                    event_id=event.event_id,
                    event_type=event.type,
                    reason=decision.reason,
                    occurred_at=event.created,
                )
            )

    @staticmethod
    def _notice(notice: Inbound, writes: Writes, result: BatchResult) -> None:
        """An `expiring` notice: a history row, no state change."""
        sandbox_id = str(notice.sandbox_id)
        writes.history.append(
            HistoryRow.note(sandbox_id, "notice", notice.event_id, notice.type, "expiring soon", notice.created)
        )
        writes.processed.append(ProcessedRow(notice.event_id, notice.type, notice.sandbox_id, "notice"))
        result.outcomes["notice"] += 1

    @staticmethod
    def _anomaly(
        obs: Observation, row: SandboxRow | None, reason: str, writes: Writes, result: BatchResult
    ) -> None:
        """An observation the chart cannot reach from the current state: recorded, and each event dead-lettered."""
        current = str(row.state) if row else None
        reason = reason or f"{obs.observed} cannot follow {current}"
        for event in obs.events:
            writes.anomalies.append(AnomalyRow(obs.sandbox_id, event.event_id, str(current), str(obs.observed), reason))
            writes.history.append(
                HistoryRow(
                    sandbox_id=obs.sandbox_id,
                    kind="anomaly",
                    from_state=current,
                    to_state=str(obs.observed),
                    observed=None,
                    sequence=None,
                    event_id=event.event_id,
                    event_type=event.type,
                    reason=reason,
                    occurred_at=event.created,
                )
            )
            result.poison.append((event, Anomaly(f"sandbox {obs.sandbox_id}: {reason}")))

    @staticmethod
    def _repaired(obs: Observation, before: State | None, repair: str, writes: Writes, result: BatchResult) -> None:
        """Record that a repair pass, not a webhook, moved this sandbox: webhooks about it were lost."""
        reporting = _latest(obs.events)
        detail = (
            f"{repair}: Stripe reports {obs.observed}, we had {before or 'no record'}"
            " (the webhooks that would have moved it were lost)"
        )
        writes.history.append(
            HistoryRow(
                sandbox_id=obs.sandbox_id,
                kind="repair",
                from_state=None if before is None else str(before),
                to_state=str(obs.observed),
                observed=True,
                sequence=None,
                event_id=reporting.event_id,
                event_type=reporting.type,
                reason=detail,
                occurred_at=reporting.created,
            )
        )
        result.repairs.append(Repair(obs.sandbox_id, "state", detail))

    @staticmethod
    def _account(
        event: Inbound, matched: list[SandboxRow], writes: Writes, result: BatchResult, repair: str | None
    ) -> None:
        set_flag(event.event_id, event.type, str(event.account), event.created_ms, matched, writes)
        if repair is not None:
            detail = (
                f"{repair}: applied {event.type} {event.event_id} of account {event.account} (its webhook was lost)"
            )
            writes.history.extend(
                HistoryRow.note(row.id, "repair", event.event_id, event.type, detail, event.created) for row in matched
            )
            result.repairs.extend(Repair(row.id, "flag", detail) for row in matched)
            if not matched:
                result.repairs.append(Repair(None, "flag", f"{detail}; no sandbox has this account yet"))
        outcome = "flag" if matched else "unmatched"
        writes.processed.append(ProcessedRow(event.event_id, event.type, matched[0].id if matched else None, outcome))
        result.outcomes[outcome] += 1

    def _snapshot(self, row: SandboxRow, writes: Writes) -> None:
        """A changed sandbox gets a new version, and its snapshot goes to the state topic (through the outbox)."""
        row.version += 1
        snapshot = state_snapshot(
            row.id,
            row.state,
            version=row.version,
            updated_at=datetime.now(UTC),
            flags=row.flags,
            stripe=row.stripe,
            last_event_id=row.last_event_id,
        )
        writes.outbox.append(
            OutboxRow(
                self.topic_state,
                row.id.encode(),
                orjson.dumps(snapshot),
                content_type_headers(SNAPSHOT_CONTENT_TYPE, {H_STATE_VERSION: str(row.version)}),
                f"{row.id}:v{row.version}",
            )
        )


def _note_answer_time(obs: Observation, row: SandboxRow) -> None:
    """Keep the time of an applied fetch (`without_fetch.Seen`), when the row is written anyway: a fetch that
    changed nothing does not write its row, as that would move `updated_at`, which tells the reconciler and
    the stuck-sandbox count how long the sandbox has not moved."""
    if obs.at is None or not (row.dirty or row.touched):
        return
    if row.observed_at is None or obs.at > row.observed_at:
        row.observed_at = obs.at


def _fields(obs: Observation, row: SandboxRow) -> dict[str, Any] | None:
    """The Stripe fields a sandbox keeps after `obs`: a fetch's, or (settled without a fetch) the ones we had,
    with the status the events told when they moved it to a final state."""
    if obs.fetched is not None:
        return stripe_fields(obs.fetched)
    if row.stripe is not None and row.state is State.EXPIRED and row.stripe.get("status") != "expired":
        return {**row.stripe, "status": "expired"}
    return row.stripe
