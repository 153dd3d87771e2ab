"""Catch missed webhooks: fetch sandboxes that have not moved for a while and drive them to Stripe's state.

A pass visits, in id order, the sandboxes not in a final state whose row was not updated for `age`, fetches
each from Stripe (rate-limited by the key's shared budget) and applies what it finds through the consumer's
own `Applier` (one transaction per batch: state, history, processed event, outbox), so the walk through any
skipped states is recorded and published exactly as if the webhooks had arrived. It then lists Stripe's
sandbox events of the window to find sandboxes Stripe knows and we do not, and registers them the same way,
and lists the v1 account events we handle (`GET /v1/events`) to apply the ones never processed. A pass is
resumable: its cursor (the last sandbox id done) is saved after every batch.

A repair means webhooks were lost, so it is never silent: each one is a `repair` row in the sandbox's history
(in the same transaction as the change), a warning in the log, and a call of `on_repair` (a metric). So a pass
must not "repair" what webhooks are still about to do:

- Events Stripe created less than `age` ago may still be on their way (Stripe delivers late, and retries for
  days), so discovery only looks at sandbox events older than `age`, as the account-event recovery does and as
  the known sandboxes are picked (not updated for `age`). The bound reads Stripe's `created` against our clock:
  a skew of seconds against an age of an hour.
- Events already delivered may wait in the consumer's lag (a backlog takes minutes to hours to drain at
  Stripe's rate). Given the event log (the periodic reconciler of `processor run` gives it), every batch of
  fetched sandboxes waits, before it is applied, until the consumer has applied every event the log held when
  the batch was fetched; the Applier then decides again under the sandbox's lock, so a sandbox those events
  moved is in sync (stale), not repaired. Without the log (the CLI, the API: an operator's explicit run) there
  is no wait.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from processor import constants as c
from processor.consumer.applier import Applier, BatchResult, Observation, Repair
from processor.consumer.inbound import SANDBOX_PREFIX, Action, Inbound, parse
from processor.db.pool import Database
from processor.errors import PoisonEvent, StripeError
from processor.eventlog.base import EventLog, Record
from processor.lifecycle import Outcome, State, decide, observed_state
from processor.lifecycle.messages import rfc3339
from processor.operations.progress import NoProgress, Progress
from processor.operations.replay import STRIPE_RETENTION
from processor.operations.status import log_position, wait_applied
from processor.operations.stripe_events import v1_account_events
from processor.settings import Settings
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

FINAL_STATES = (State.LIVE, State.EXPIRED)
DEFAULT_AGE = timedelta(hours=1)
#: sandboxes per database page and per Applier transaction
BATCH = 100
#: Stripe fetches in flight at once (the key's shared budget still caps the rate)
CONCURRENCY = 8
#: event type of the observations reconcile makes (recorded in processed_events and history)
RECONCILE_EVENT_TYPE = "processor.reconcile"


@dataclass(slots=True)
class ReconcileReport:
    run_id: str
    dry_run: bool
    resumed: bool = False
    checked: int = 0
    in_sync: int = 0
    #: sandboxes whose state we moved (or, dry, would move), by the state Stripe reports
    repaired: Counter[str] = field(default_factory=Counter)
    #: transitions written (the walk through skipped states counts each step)
    transitions: int = 0
    stale: int = 0
    anomalies: int = 0
    missing_at_stripe: int = 0
    failed: int = 0
    discovered: list[str] = field(default_factory=list)
    #: v1 account events Stripe lists that were never processed, applied (or, dry, that would be)
    account_events: list[str] = field(default_factory=list)
    #: changes webhooks should have made: each is also a history row, a warning and a metric
    repairs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "checked": self.checked,
            "in_sync": self.in_sync,
            "repaired": dict(self.repaired),
            "transitions": self.transitions,
            "stale": self.stale,
            "anomalies": self.anomalies,
            "missing_at_stripe": self.missing_at_stripe,
            "failed": self.failed,
            "discovered": self.discovered,
            "account_events": self.account_events,
            "repairs": self.repairs,
        }


def _observation(sandbox_id: str, fetched: dict[str, Any], run_id: str) -> Observation:
    """What the consumer would have built from a webhook, with a reconcile observation standing in for it."""
    now = datetime.now(UTC)
    # not a Stripe event: the id says so, and is unique per pass so processed_events keeps every repair
    event_id = f"reconcile_{run_id}_{sandbox_id}"
    record = Record("reconcile", 0, 0, sandbox_id.encode(), b"{}", (), int(now.timestamp() * 1000))
    event = Inbound(record, event_id, RECONCILE_EVENT_TYPE, Action.OBSERVE, sandbox_id, None, now, from_stripe=False)
    return Observation(sandbox_id, [event], fetched, observed_state(fetched))


@dataclass(slots=True)
class _Pass:
    """One pass's tools and tallies, handed to each of its phases."""

    db: Database
    applier: Applier
    stripe: StripeApi
    report: ReconcileReport
    on_repair: Callable[[Repair], None] | None
    settings: Settings | None = None
    #: the event log the consumer reads: repairs wait until it has applied what the log held (module docstring)
    event_log: EventLog | None = None

    @property
    def label(self) -> str:
        return f"reconcile {self.report.run_id}"

    async def log_position(self) -> dict[int, int] | None:
        """Where the event log ends now (None without one): taken before a batch is fetched."""
        if self.event_log is None or self.settings is None:
            return None
        return await log_position(self.settings, self.event_log)

    async def consumer_past(self, position: dict[int, int] | None) -> None:
        """Wait until the consumer has applied every event up to `position`."""
        if position is not None and self.event_log is not None and self.settings is not None:
            await wait_applied(self.settings, self.event_log, position)

    def applied(self, result: BatchResult) -> None:
        """Tally what one Applier transaction did; every repair becomes a warning and a metric."""
        self.report.transitions += sum(result.transitions.values())
        self.report.stale += result.outcomes.get("stale", 0)
        self.report.anomalies += len(result.poison)
        for _event, error in result.poison:
            log.warning("reconcile: %s", error)
        self.report.repairs += len(result.repairs)
        for repair in result.repairs:
            log.warning("reconcile repaired %s (%s): %s", repair.sandbox_id or "no sandbox", repair.kind, repair.detail)
            if self.on_repair is not None:
                self.on_repair(repair)


async def _start(db: Database, cursor: str, age: timedelta) -> tuple[str, str, bool, int]:
    """The pass's run id, the last sandbox id done (an interrupted pass resumes after it), whether it resumes,
    and how many sandboxes are left to check."""
    async with db.pool.acquire() as conn:
        saved = await conn.fetchrow("SELECT run_id, last_id FROM reconcile_cursors WHERE name = $1", cursor)
        run_id = saved["run_id"] if saved else uuid.uuid4().hex[:12]
        last_id = saved["last_id"] if saved else ""
        total = await conn.fetchval(
            "SELECT count(*) FROM sandboxes WHERE state <> ALL($1::text[]) AND updated_at < now() - $2::interval"
            " AND id > $3",
            [str(s) for s in FINAL_STATES],
            age,
            last_id,
        )
    return run_id, last_id, saved is not None, total


async def _check_known(
    run: _Pass, age: timedelta, last_id: str, limit: int | None, cursor: str | None, progress: Progress
) -> None:
    """Repair the sandboxes not in a final state whose row did not change for `age`, a page at a time in id
    order after `last_id`; `cursor` (None in a dry run) saves where the pass is after every page."""
    finals = [str(s) for s in FINAL_STATES]
    report = run.report
    while limit is None or report.checked < limit:
        async with run.db.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, state FROM sandboxes WHERE state <> ALL($1::text[])"
                " AND updated_at < now() - $2::interval AND id > $3 ORDER BY id LIMIT $4",
                finals,
                age,
                last_id,
                BATCH if limit is None else min(BATCH, limit - report.checked),
            )
        if not rows:
            break
        current: dict[str, State | None] = {row["id"]: State(row["state"]) for row in rows}
        await _repair(run, current)
        last_id = rows[-1]["id"]
        if cursor is not None:
            async with run.db.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO reconcile_cursors (name, run_id, last_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id, updated_at = now()",
                    cursor,
                    report.run_id,
                    last_id,
                )
        progress.advance(len(rows))


async def reconcile(
    settings: Settings,
    db: Database,
    stripe: StripeApi,
    *,
    age: timedelta = DEFAULT_AGE,
    dry_run: bool = False,
    discover: bool = True,
    discover_window: timedelta = STRIPE_RETENTION,
    limit: int | None = None,
    cursor: str = "cli",
    progress: Progress | None = None,
    on_repair: Callable[[Repair], None] | None = None,
    event_log: EventLog | None = None,
) -> ReconcileReport:
    """One reconcile pass (resuming the interrupted pass under `cursor`); see the module docstring.

    `discover` also searches Stripe's events of `discover_window` older than `age` for sandboxes we do not know
    and for v1 account events that were never processed. With `event_log`, nothing is repaired before the
    consumer has applied what the log held when it was fetched."""
    progress = progress or NoProgress()
    applier = Applier(db.pool, settings.topic(c.TOPIC_TRANSITIONS), settings.topic(c.TOPIC_STATE))
    run_id, last_id, resumed, total = await _start(db, cursor, age)
    report = ReconcileReport(run_id, dry_run, resumed=resumed)
    run = _Pass(db, applier, stripe, report, on_repair, settings, event_log)
    progress.total(min(total, limit) if limit is not None else total)
    try:
        await _check_known(run, age, last_id, limit, None if dry_run else cursor, progress)
        if discover and (limit is None or report.checked < limit):
            since = datetime.now(UTC) - min(discover_window, STRIPE_RETENTION)
            until = datetime.now(UTC) - age
            await _discover(run, since, until)
            await _recover_account_events(run, since, until)
    finally:
        progress.close()
    if not dry_run and (limit is None or report.checked < limit):
        async with db.pool.acquire() as conn:
            await conn.execute("DELETE FROM reconcile_cursors WHERE name = $1", cursor)
    log.info("reconcile %s: %s", run_id, report.as_dict())
    return report


async def reconcile_sandbox(
    settings: Settings, db: Database, stripe: StripeApi, sandbox_id: str, *, dry_run: bool = False
) -> ReconcileReport:
    """Fetch one sandbox from Stripe now and drive it to Stripe's state (whatever its age); the console's
    "reconcile this sandbox". A sandbox we do not know is registered, as a pass's discovery would."""
    applier = Applier(db.pool, settings.topic(c.TOPIC_TRANSITIONS), settings.topic(c.TOPIC_STATE))
    async with db.pool.acquire() as conn:
        state = await conn.fetchval("SELECT state FROM sandboxes WHERE id = $1", sandbox_id)
    report = ReconcileReport(f"one-{uuid.uuid4().hex[:12]}", dry_run)
    await _repair(_Pass(db, applier, stripe, report, None), {sandbox_id: None if state is None else State(state)})
    log.info("reconcile of %s: %s", sandbox_id, report.as_dict())
    return report


async def _fetch_all(stripe: StripeApi, ids: Sequence[str], report: ReconcileReport) -> dict[str, dict[str, Any]]:
    """Fetch each sandbox once; a 404 and a failure after the client's retries are counted, not raised."""
    slots = asyncio.Semaphore(CONCURRENCY)
    fetched: dict[str, dict[str, Any]] = {}

    async def one(sandbox_id: str) -> None:
        async with slots:
            try:
                fetched[sandbox_id] = await stripe.retrieve_sandbox(sandbox_id)
            except StripeError as exc:
                if exc.status == 404:
                    report.missing_at_stripe += 1
                    log.warning("reconcile: Stripe does not know sandbox %s", sandbox_id)
                else:
                    report.failed += 1
                    log.warning("reconcile: fetching sandbox %s failed: %s", sandbox_id, exc)

    await asyncio.gather(*(one(sid) for sid in ids))
    return fetched


async def _repair(run: _Pass, current: dict[str, State | None]) -> None:
    """Fetch the sandboxes in `current` (None = unknown to us) and apply every one that is not in sync."""
    report = run.report
    report.checked += len(current)
    position = await run.log_position()
    fetched = await _fetch_all(run.stripe, sorted(current), report)
    observations = []
    for sandbox_id, sandbox in sorted(fetched.items()):
        try:
            observation = _observation(sandbox_id, sandbox, report.run_id)
        except PoisonEvent as exc:  # a status this processor does not know: nothing safe to do
            report.failed += 1
            log.warning("reconcile: %s", exc)
            continue
        if observation.observed == current[sandbox_id]:
            report.in_sync += 1
        else:
            observations.append(observation)
    if report.dry_run:
        for observation in observations:
            decision = decide(current[observation.sandbox_id], observation.observed)
            if decision.outcome is Outcome.ADVANCE:
                report.repaired[str(observation.observed)] += 1
                report.transitions += len(decision.steps)
            elif decision.outcome is Outcome.STALE:
                report.stale += 1
            else:
                report.anomalies += 1
        return
    if not observations:
        return
    await run.consumer_past(position)
    # the Applier decides again under the sandbox's lock: a webhook applied meanwhile is taken into account
    result = await run.applier.apply(observations, [], [], repair=run.label)
    moved = {r.sandbox_id for r in result.repairs if r.kind == "state"}
    report.repaired.update(str(o.observed) for o in observations if o.sandbox_id in moved)
    run.applied(result)


async def _discover(run: _Pass, since: datetime, until: datetime) -> None:
    """Register sandboxes that Stripe's sandbox events of [since, until] name but our database does not know."""
    named: set[str] = set()
    if until < since:
        return
    params: dict[str, Any] | None = {"limit": 100, "created[gte]": rfc3339(since), "created[lte]": rfc3339(until)}
    page_url: str | None = None
    while True:
        page = await run.stripe.list_events(params, page_url=page_url)
        for event in page.get("data") or []:
            related = event.get("related_object") if isinstance(event, dict) else None
            if (
                isinstance(related, dict)
                and str(event.get("type", "")).startswith(SANDBOX_PREFIX)
                and isinstance(related.get("id"), str)
            ):
                named.add(related["id"])
        page_url = page.get("next_page_url")
        if not page_url or not page.get("data"):
            break
        params = None
    async with run.db.pool.acquire() as conn:
        known = {
            r["id"] for r in await conn.fetch("SELECT id FROM sandboxes WHERE id = ANY($1::text[])", sorted(named))
        }
    unknown = sorted(named - known)
    run.report.discovered = unknown
    for start in range(0, len(unknown), BATCH):
        await _repair(run, dict.fromkeys(unknown[start : start + BATCH]))


async def _recover_account_events(run: _Pass, since: datetime, until: datetime) -> None:
    """Apply the v1 account events Stripe lists in [since, until] that were never processed (their webhook
    was lost), exactly as the consumer would have: a dropped deauthorization still sets the flag."""
    position = await run.log_position()
    events: list[Inbound] = []
    async for payload in v1_account_events(run.stripe, since, until):
        body = orjson.dumps(payload)
        record = Record("reconcile", 0, 0, None, body, (), int(datetime.now(UTC).timestamp() * 1000))
        try:
            events.append(parse(record))
        except PoisonEvent as exc:
            run.report.failed += 1
            log.warning("reconcile: skipping an account event Stripe lists: %s", exc)
    if events and not run.report.dry_run:
        await run.consumer_past(position)  # one the consumer still holds is not lost
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        done = await run.applier.already_processed([e.event_id for e in chunk])
        missed = [e for e in chunk if e.event_id not in done]
        run.report.account_events.extend(e.event_id for e in missed)
        if missed and not run.report.dry_run:
            run.applied(await run.applier.apply([], [], missed, repair=run.label))
