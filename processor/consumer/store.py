"""The sandboxes rows one batch works on, read under the batch's locks, and the batch written back.

Every table is written in one round trip whatever the batch size: the rows of processor.consumer.handlers are
passed as one array per column to an `INSERT ... SELECT FROM unnest(...)`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from processor.consumer.handlers import Writes
from processor.db.pool import Connection
from processor.lifecycle import State


@dataclass(slots=True)
class SandboxRow:
    """A sandboxes row being worked on in memory."""

    id: str
    state: State
    sequence: int
    flags: dict[str, bool]
    flags_as_of_ms: int
    stripe: dict[str, Any] | None
    version: int
    last_event_id: str | None
    #: Stripe's time of the newest fetch applied to this row (`lifecycle.without_fetch.Seen`)
    observed_at: datetime | None = None
    #: changed in a way readers see: a new version and snapshot
    dirty: bool = False
    #: to be written back (dirty, or only the flags clock or the observation time moved)
    touched: bool = False

    @property
    def accounts(self) -> tuple[str | None, str | None]:
        stripe = self.stripe or {}
        return stripe.get("sandbox_account"), stripe.get("owner_account")


async def lock_and_read(conn: Connection, ids: Collection[str]) -> dict[str, SandboxRow]:
    """Take the transaction's advisory lock of every sandbox in `ids`, then read the rows that exist."""
    ordered = sorted(ids)
    # lock in hash order so two writers never wait on each other in a cycle
    await conn.execute(
        "SELECT pg_advisory_xact_lock(h) FROM"
        " (SELECT DISTINCT hashtext(id) AS h FROM unnest($1::text[]) AS id ORDER BY 1) AS locks",
        ordered,
    )
    records = await conn.fetch("SELECT * FROM sandboxes WHERE id = ANY($1)", ordered)
    return {row.id: row for row in map(_sandbox_row, records)}


async def write_batch(conn: Connection, changed: Sequence[SandboxRow], writes: Writes) -> None:
    """Write the changed sandboxes rows and every other row of the batch."""
    if changed:
        await _upsert_sandboxes(conn, changed)
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


async def _upsert_sandboxes(conn: Connection, changed: Sequence[SandboxRow]) -> None:
    await conn.execute(
        "INSERT INTO sandboxes (id, state, sequence, flags, flags_as_of_ms, stripe, sandbox_account,"
        " owner_account, version, last_event_id, observed_at)"
        " SELECT id, state, seq, flags::jsonb, as_of, stripe::jsonb, sacct, oacct, version, last_event, seen"
        " FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::text[],"
        " $7::text[], $8::text[], $9::int[], $10::text[], $11::timestamptz[])"
        " AS u(id, state, seq, flags, as_of, stripe, sacct, oacct, version, last_event, seen)"
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, sequence = excluded.sequence,"
        " flags = excluded.flags, flags_as_of_ms = excluded.flags_as_of_ms, stripe = excluded.stripe,"
        " sandbox_account = excluded.sandbox_account, owner_account = excluded.owner_account,"
        " version = excluded.version, last_event_id = excluded.last_event_id,"
        " observed_at = excluded.observed_at, updated_at = now()",
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
        [r.observed_at for r in changed],
    )


async def _insert_columns(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run `sql` (an INSERT ... SELECT FROM unnest($1, $2, ...)) with `rows` passed as one array per column:
    one round trip for any number of rows. Nothing to insert, no query."""
    if rows:
        await conn.execute(sql, *[list(column) for column in zip(*rows, strict=True)])


def _sandbox_row(record: asyncpg.Record) -> SandboxRow:
    flags = record["flags"]
    stripe = record["stripe"]
    return SandboxRow(
        id=record["id"],
        state=State(record["state"]),
        sequence=int(record["sequence"]),
        flags=orjson.loads(flags) if isinstance(flags, str | bytes) else dict(flags),
        flags_as_of_ms=int(record["flags_as_of_ms"]),
        stripe=orjson.loads(stripe) if isinstance(stripe, str | bytes) else stripe,
        version=int(record["version"]),
        last_event_id=record["last_event_id"],
        observed_at=record["observed_at"],
    )
