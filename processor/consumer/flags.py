"""Account events (v1 account.application.authorized / .deauthorized) set or clear the deauthorized flag of
the sandboxes whose account they name; the newest event wins, whatever order they arrive in.

An event about an account no sandbox has yet is kept (table account_events) and applied when a sandbox learns
that account from a later fetch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from processor.consumer.handlers import HistoryRow, Writes
from processor.consumer.inbound import DEAUTHORIZED, Inbound
from processor.consumer.store import SandboxRow
from processor.db.pool import Connection

#: the flag v1 account.application.deauthorized sets and .authorized clears
FLAG_DEAUTHORIZED = "app_deauthorized"

Accounts = tuple[str | None, str | None]


def index_by_account(rows: Iterable[SandboxRow]) -> dict[str, list[SandboxRow]]:
    """The rows of each account (sandbox or owner). Accounts are final once the observations are applied;
    the index spares a scan of every row per account event (that made a batch quadratic, a tenth of the
    consumer's CPU at 2,000 records per batch)."""
    by_account: dict[str, list[SandboxRow]] = defaultdict(list)
    for row in rows:
        for account in dict.fromkeys(row.accounts):
            if account is not None:
                by_account[account].append(row)
    return by_account


async def apply_kept_events(
    conn: Connection,
    rows: Collection[SandboxRow],
    known: Mapping[str, Accounts],
    by_account: Mapping[str, list[SandboxRow]],
    writes: Writes,
) -> None:
    """Apply the account events that came before we knew which sandbox they were about to the sandboxes that
    learned their account in this batch (`known`: the accounts each row had before; a sandbox that knew an
    account already had its events applied back then)."""
    learned = sorted(
        {
            account
            for row in rows
            for account in row.accounts
            if account is not None and account not in known.get(row.id, ())
        }
    )
    if not learned:
        return
    for kept in await conn.fetch(
        "SELECT event_id, account, event_type, created_ms FROM account_events WHERE account = ANY($1)"
        " ORDER BY created_ms, event_id",
        learned,
    ):
        learners = [r for r in by_account.get(kept["account"], []) if kept["account"] not in known.get(r.id, ())]
        set_flag(
            kept["event_id"],
            kept["event_type"],
            kept["account"],
            int(kept["created_ms"]),
            learners,
            writes,
            note="kept until the sandbox's account became known",
        )
        writes.matched_later.extend((kept["event_id"], r.id) for r in learners[:1])


async def keep_events(conn: Connection, account_events: Sequence[Inbound]) -> None:
    """Remember the batch's account events, for sandboxes that learn their account later."""
    if not account_events:
        return
    await conn.execute(
        "INSERT INTO account_events (event_id, account, event_type, created_ms)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ON CONFLICT DO NOTHING",
        [e.event_id for e in account_events],
        [str(e.account) for e in account_events],
        [e.type for e in account_events],
        [e.created_ms for e in account_events],
    )


def set_flag(
    event_id: str,
    event_type: str,
    account: str,
    created_ms: int,
    matched: list[SandboxRow],
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
            HistoryRow.note(row.id, "flag", event_id, event_type, f"{reason} (account {account}){suffix}", created)
        )
