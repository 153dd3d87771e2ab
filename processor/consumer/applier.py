"""One batch of the lifecycle consumer applied in ONE PostgreSQL transaction (ARCHITECTURE §6).

State, history, processed events and outbox rows commit together or not at all, so a crash anywhere leaves
either the whole batch applied (its redelivery is then a no-op) or nothing. Writers of one sandbox serialise
on an advisory lock taken in a fixed order, so two consumers that both hold a redelivered record (during a
rebalance) cannot interleave, and the outbox ids of one sandbox are in commit order, which the relay relies on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from processor.constants import H_STATE_VERSION
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
from processor.consumer.inbound import DEAUTHORIZED, Inbound
from processor.db.pool import DATABASE_ERRORS, Connection
from processor.errors import Anomaly, DatabaseUnavailable, PoisonEvent
from processor.lifecycle import Outcome, State, decide, stripe_fields
from processor.lifecycle.messages import SNAPSHOT_CONTENT_TYPE, state_snapshot
from processor.lifecycle.walk import walk

#: the flag v1 account.application.deauthorized sets and .authorized clears
FLAG_DEAUTHORIZED = "app_deauthorized"


@dataclass(slots=True)
class Observation:
    """A sandbox fetched once for all of its observation events in the batch."""

    sandbox_id: str
    events: list[Inbound]
    fetched: Mapping[str, Any]
    observed: State


@dataclass(slots=True)
class _Row:
    """A sandboxes row being worked on in memory."""

    id: str
    state: State
    sequence: int
    flags: dict[str, bool]
    flags_as_of_ms: int
    stripe: dict[str, Any] | None
    version: int
    last_event_id: str | None
    #: changed in a way readers see: a new version and snapshot
    dirty: bool = False
    #: to be written back (dirty, or only the flags clock moved)
    touched: bool = False

    @property
    def accounts(self) -> tuple[str | None, str | None]:
        stripe = self.stripe or {}
        return stripe.get("sandbox_account"), stripe.get("owner_account")


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
        if not event_ids:
            return set()
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT event_id FROM processed_events WHERE event_id = ANY($1)", list(event_ids)
                )
        except DATABASE_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot read processed events: {exc}") from exc
        return {row["event_id"] for row in rows}

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
        ordered = sorted(ids)
        # lock in hash order so two writers never wait on each other in a cycle
        await conn.execute(
            "SELECT pg_advisory_xact_lock(h) FROM"
            " (SELECT DISTINCT hashtext(id) AS h FROM unnest($1::text[]) AS id ORDER BY 1) AS locks",
            ordered,
        )
        rows = {r.id: r for r in map(_row, await conn.fetch("SELECT * FROM sandboxes WHERE id = ANY($1)", ordered))}

        known = {row.id: row.accounts for row in rows.values()}
        for observation in observations:
            self._observe(observation, rows, writes, result, repair)
        for notice in notices:
            writes.history.append(
                HistoryRow(
                    str(notice.sandbox_id),
                    "notice",
                    None,
                    None,
                    None,
                    None,
                    notice.event_id,
                    notice.type,
                    "expiring soon",
                    notice.created,
                )
            )
            writes.processed.append(ProcessedRow(notice.event_id, notice.type, notice.sandbox_id, "notice"))
            result.outcomes["notice"] += 1
        learned = sorted(
            {
                account
                for row in rows.values()
                for account in row.accounts
                if account is not None and account not in known.get(row.id, ())
            }
        )
        # accounts are final once the observations are applied: index them (a scan of every row per account
        # event made a batch quadratic, a tenth of the consumer's CPU at 2,000 records per batch)
        by_account: dict[str, list[_Row]] = defaultdict(list)
        for row in rows.values():
            for account in dict.fromkeys(row.accounts):
                if account is not None:
                    by_account[account].append(row)
        if learned:
            # account events that came before we knew which sandbox they were about, applied to the sandboxes
            # that learned their account now (one that knew it already had them applied back then)
            for kept in await conn.fetch(
                "SELECT event_id, account, event_type, created_ms FROM account_events WHERE account = ANY($1)"
                " ORDER BY created_ms, event_id",
                learned,
            ):
                learners = [
                    r for r in by_account.get(kept["account"], []) if kept["account"] not in known.get(r.id, ())
                ]
                self._flag(
                    kept["event_id"],
                    kept["event_type"],
                    kept["account"],
                    int(kept["created_ms"]),
                    learners,
                    writes,
                    note="kept until the sandbox's account became known",
                )
                writes.matched_later.extend((kept["event_id"], r.id) for r in learners[:1])
        for event in sorted(account_events, key=lambda e: (e.created, e.record.offset)):
            self._account(event, by_account.get(str(event.account), []), writes, result, repair)
        if account_events:
            await conn.execute(
                "INSERT INTO account_events (event_id, account, event_type, created_ms)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ON CONFLICT DO NOTHING",
                [e.event_id for e in account_events],
                [str(e.account) for e in account_events],
                [e.type for e in account_events],
                [e.created_ms for e in account_events],
            )

        for row in rows.values():
            if row.dirty:
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
        await self._write(conn, [r for r in rows.values() if r.dirty or r.touched], writes)
        result.outbox_rows = len(writes.outbox)
        return result

    def _observe(
        self, obs: Observation, rows: dict[str, _Row], writes: Writes, result: BatchResult, repair: str | None
    ) -> None:
        row = rows.get(obs.sandbox_id)
        decision = decide(row.state if row else None, obs.observed)
        reporting = _latest(obs.events)
        if decision.outcome is Outcome.ANOMALY:
            self._anomaly(obs, row, decision.reason or "", writes, result)
            return
        fields = stripe_fields(obs.fetched)
        if decision.outcome is Outcome.ADVANCE:
            before = row.state if row else None
            if row is None:
                row = _Row(obs.sandbox_id, State.UNCLAIMED, 0, {FLAG_DEAUTHORIZED: False}, 0, None, 0, None)
                rows[obs.sandbox_id] = row
            if repair is not None:
                self._repaired(obs, before, repair, writes, result)
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
            outcome = "applied"
        elif row is None:  # decide() never calls an observation of an unknown sandbox stale
            raise ValueError(f"stale observation of unknown sandbox {obs.sandbox_id}")
        else:
            for event in obs.events:
                writes.history.append(
                    HistoryRow(
                        obs.sandbox_id,
                        "stale",
                        str(row.state),
                        str(obs.observed),
                        True,
                        None,
                        event.event_id,
                        event.type,
                        decision.reason,
                        event.created,
                    )
                )
            outcome = "stale"
        if row.stripe != fields:
            row.stripe = fields
            row.dirty = True
        if row.dirty:
            row.last_event_id = reporting.event_id
        for event in obs.events:
            writes.processed.append(ProcessedRow(event.event_id, event.type, obs.sandbox_id, outcome))
            result.outcomes[outcome] += 1

    @staticmethod
    def _anomaly(obs: Observation, row: _Row | None, reason: str, writes: Writes, result: BatchResult) -> None:
        """An observation the chart cannot reach from the current state: recorded, and each event dead-lettered."""
        current = str(row.state) if row else None
        reason = reason or f"{obs.observed} cannot follow {current}"
        for event in obs.events:
            writes.anomalies.append(AnomalyRow(obs.sandbox_id, event.event_id, str(current), str(obs.observed), reason))
            writes.history.append(
                HistoryRow(
                    obs.sandbox_id,
                    "anomaly",
                    current,
                    str(obs.observed),
                    None,
                    None,
                    event.event_id,
                    event.type,
                    reason,
                    event.created,
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
                obs.sandbox_id,
                "repair",
                None if before is None else str(before),
                str(obs.observed),
                True,
                None,
                reporting.event_id,
                reporting.type,
                detail,
                reporting.created,
            )
        )
        result.repairs.append(Repair(obs.sandbox_id, "state", detail))

    def _account(
        self, event: Inbound, matched: list[_Row], writes: Writes, result: BatchResult, repair: str | None
    ) -> None:
        self._flag(event.event_id, event.type, str(event.account), event.created_ms, matched, writes)
        if repair is not None:
            detail = (
                f"{repair}: applied {event.type} {event.event_id} of account {event.account} (its webhook was lost)"
            )
            for row in matched:
                writes.history.append(
                    HistoryRow(
                        row.id, "repair", None, None, None, None, event.event_id, event.type, detail, event.created
                    )
                )
            result.repairs.extend(Repair(row.id, "flag", detail) for row in matched)
            if not matched:
                result.repairs.append(Repair(None, "flag", f"{detail}; no sandbox has this account yet"))
        outcome = "flag" if matched else "unmatched"
        writes.processed.append(ProcessedRow(event.event_id, event.type, matched[0].id if matched else None, outcome))
        result.outcomes[outcome] += 1

    @staticmethod
    def _flag(
        event_id: str,
        event_type: str,
        account: str,
        created_ms: int,
        matched: list[_Row],
        writes: Writes,
        note: str | None = None,
    ) -> None:
        """Set or clear the deauthorized flag of `matched` unless a newer account event already did; either
        way a `flag` history row names the event, so every flag and every ignored event can be explained."""
        value = event_type == DEAUTHORIZED
        created = datetime.fromtimestamp(created_ms / 1000, UTC)
        suffix = f"; {note}" if note else ""
        for row in matched:
            # an older event delivered late must not undo a newer one; v1 `created` has whole seconds, and
            # within one second a deauthorization follows the authorization it ends, so it wins the tie
            if created_ms < row.flags_as_of_ms or (created_ms == row.flags_as_of_ms and not value):
                reason = f"ignored: older than the account event that set {FLAG_DEAUTHORIZED} last"
            else:
                reason = f"{FLAG_DEAUTHORIZED}={str(value).lower()}"
                row.flags_as_of_ms = created_ms
                row.touched = True
                if row.flags.get(FLAG_DEAUTHORIZED, False) != value:
                    row.flags = {**row.flags, FLAG_DEAUTHORIZED: value}
                    row.dirty = True
                    row.last_event_id = event_id
            writes.history.append(
                HistoryRow(
                    row.id,
                    "flag",
                    None,
                    None,
                    None,
                    None,
                    event_id,
                    event_type,
                    f"{reason} (account {account}){suffix}",
                    created,
                )
            )

    async def _write(self, conn: Connection, changed: Sequence[_Row], writes: Writes) -> None:
        if changed:
            await conn.execute(
                "INSERT INTO sandboxes (id, state, sequence, flags, flags_as_of_ms, stripe, sandbox_account,"
                " owner_account, version, last_event_id)"
                " SELECT id, state, seq, flags::jsonb, as_of, stripe::jsonb, sacct, oacct, version, last_event"
                " FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::text[],"
                " $7::text[], $8::text[], $9::int[], $10::text[])"
                " AS u(id, state, seq, flags, as_of, stripe, sacct, oacct, version, last_event)"
                " ON CONFLICT (id) DO UPDATE SET state = excluded.state, sequence = excluded.sequence,"
                " flags = excluded.flags, flags_as_of_ms = excluded.flags_as_of_ms, stripe = excluded.stripe,"
                " sandbox_account = excluded.sandbox_account, owner_account = excluded.owner_account,"
                " version = excluded.version, last_event_id = excluded.last_event_id, updated_at = now()",
                [r.id for r in changed],
                [str(r.state) for r in changed],
                [r.sequence for r in changed],
                [orjson.dumps(r.flags).decode() for r in changed],
                [r.flags_as_of_ms for r in changed],
                [None if r.stripe is None else orjson.dumps(r.stripe).decode() for r in changed],
                [r.accounts[0] for r in changed],
                [r.accounts[1] for r in changed],
                [r.version for r in changed],
                [r.last_event_id for r in changed],
            )
        await _insert_columns(
            conn,
            "INSERT INTO sandbox_history (sandbox_id, kind, from_state, to_state, observed, sequence,"
            " event_id, event_type, reason, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int[],"
            " $7::text[], $8::text[], $9::text[], $10::timestamptz[])",
            writes.history,
        )
        await _insert_columns(
            conn,
            "INSERT INTO processed_events (event_id, event_type, sandbox_id, outcome)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
            " ON CONFLICT (event_id) DO NOTHING",
            writes.processed,
        )
        if writes.matched_later:
            # the event now shows where it went: lookups by event id and by sandbox find it
            await conn.execute(
                "UPDATE processed_events p SET sandbox_id = u.sandbox_id, outcome = 'flag'"
                " FROM unnest($1::text[], $2::text[]) AS u(event_id, sandbox_id)"
                " WHERE p.event_id = u.event_id AND p.sandbox_id IS NULL",
                [e for e, _ in writes.matched_later],
                [sid for _, sid in writes.matched_later],
            )
        await _insert_columns(
            conn,
            "INSERT INTO anomalies (sandbox_id, event_id, current_state, observed_state, reason)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])"
            " ON CONFLICT (event_id, sandbox_id) DO NOTHING",
            writes.anomalies,
        )
        # WITH ORDINALITY + ORDER BY: ids follow the list order, so per key the relay publishes in order
        await _insert_columns(
            conn,
            "INSERT INTO outbox (topic, key, value, headers, message_id)"
            " SELECT topic, key, value, headers::jsonb, message_id FROM unnest($1::text[], $2::bytea[],"
            " $3::bytea[], $4::text[], $5::text[]) WITH ORDINALITY AS u(topic, key, value, headers,"
            " message_id, ord) ORDER BY ord",
            writes.outbox,
        )


async def _insert_columns(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run `sql` (an INSERT ... SELECT FROM unnest($1, $2, ...)) with `rows` passed as one array per column:
    one round trip for any number of rows. Nothing to insert, no query."""
    if rows:
        await conn.execute(sql, *[list(column) for column in zip(*rows, strict=True)])


def _row(record: asyncpg.Record) -> _Row:
    flags = record["flags"]
    stripe = record["stripe"]
    return _Row(
        id=record["id"],
        state=State(record["state"]),
        sequence=int(record["sequence"]),
        flags=orjson.loads(flags) if isinstance(flags, str | bytes) else dict(flags),
        flags_as_of_ms=int(record["flags_as_of_ms"]),
        stripe=orjson.loads(stripe) if isinstance(stripe, str | bytes) else stripe,
        version=int(record["version"]),
        last_event_id=record["last_event_id"],
    )
