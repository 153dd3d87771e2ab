"""One polled batch of the lifecycle consumer made ready for its transaction: parsed, deduplicated (in the
batch, against the batch being applied, against processed_events), and every sandbox whose state its events,
our stored state and Stripe's last answer about it cannot tell (`lifecycle.without_fetch`) fetched ONCE from
Stripe for all of its events."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from processor.consumer.applier import Applier, Held, Observation
from processor.consumer.inbound import Action, Inbound, MalformedEvent, parse
from processor.errors import PoisonEvent, StripeError
from processor.eventlog.base import Record, TopicPartition
from processor.lifecycle import observed_state
from processor.lifecycle.without_fetch import Seen, state_after
from processor.runtime.metrics import WorkerMetrics
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)


class SandboxNotFound(PoisonEvent):
    """Stripe does not know the sandbox an event names (404), even after a few tries."""

    code = "sandbox_not_found"


@dataclass(slots=True)
class Batch:
    """A polled batch, parsed, deduplicated and fetched: what its transaction will apply."""

    records: list[Record]
    #: the first offset of each partition in the batch: where a retry rewinds to
    first: dict[TopicPartition, int]
    observations: list[Observation] = field(default_factory=list)
    notices: list[Inbound] = field(default_factory=list)
    accounts: list[Inbound] = field(default_factory=list)
    poison: list[tuple[Record, PoisonEvent]] = field(default_factory=list)
    #: partitions whose fetches hit a retriable error: not applied, not committed, rewound
    failed: dict[TopicPartition, Exception] = field(default_factory=dict)
    #: per partition, so that a partition read again is counted again and only then
    duplicates: Counter[TopicPartition] = field(default_factory=Counter)
    ignored: Counter[TopicPartition] = field(default_factory=Counter)

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        """Forget the records of `partitions` (an earlier batch rewound them: they are read again)."""
        gone = set(partitions) & set(self.first)
        if not gone:
            return
        self.records = [r for r in self.records if r.tp not in gone]
        self.first = {tp: offset for tp, offset in self.first.items() if tp not in gone}
        observations = []
        for observation in self.observations:
            events = [e for e in observation.events if e.record.tp not in gone]
            if events:
                observation.events = events
                observations.append(observation)
        self.observations = observations
        self.notices = [e for e in self.notices if e.record.tp not in gone]
        self.accounts = [e for e in self.accounts if e.record.tp not in gone]
        self.poison = [(r, exc) for r, exc in self.poison if r.tp not in gone]
        self.failed = {tp: exc for tp, exc in self.failed.items() if tp not in gone}
        for tp in gone:
            self.duplicates.pop(tp, None)
            self.ignored.pop(tp, None)

    def answers(self) -> dict[str, Seen]:
        """Stripe's answers this batch fetched (with their time): the next batch, prepared while this one
        commits, reads them here, since the table does not hold them yet."""
        return {
            o.sandbox_id: Seen(o.observed, o.at) for o in self.observations if o.fetched is not None and o.at
        }

    def applying_ids(self) -> set[str]:
        """Ids the transaction records as processed: the next batch, prepared meanwhile, treats them as done."""
        ids = {e.event_id for o in self.observations for e in o.events}
        ids.update(e.event_id for e in self.notices)
        ids.update(e.event_id for e in self.accounts)
        return ids


def first_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The first offset of each partition among `records` (polled in offset order per partition)."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        first.setdefault(record.tp, record.offset)
    return first


class BatchPreparer:
    """Prepares batches; at most `fetch_concurrency` Stripe fetches run at once (the key's budget still caps
    the rate), and a sandbox Stripe answers 404 for is tried `not_found_attempts` times before it is poison."""

    def __init__(
        self,
        applier: Applier,
        stripe: StripeApi,
        *,
        fetch_concurrency: int,
        not_found_attempts: int,
        not_found_delay_s: float,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.applier = applier
        self.metrics = metrics
        self.stripe = stripe
        self.not_found_attempts = not_found_attempts
        self.not_found_delay_s = not_found_delay_s
        self._fetch_slots = asyncio.Semaphore(fetch_concurrency)

    async def prepare(
        self, records: Sequence[Record], skip_ids: Collection[str], answers: Mapping[str, Seen] | None = None
    ) -> Batch:
        """Parse, deduplicate (in the batch, `skip_ids`, processed_events) and fetch each sandbox once, unless
        its events are settled without: `answers` are the fetches of the batch being applied (`Batch.answers`)."""
        batch = Batch(list(records), first_offsets(records))
        events = self._parse(batch, records, skip_ids)
        done = await self.applier.already_processed([e.event_id for e in events])
        batch.duplicates.update(e.record.tp for e in events if e.event_id in done)
        events = [e for e in events if e.event_id not in done]
        await self._fetch(batch, events, answers or {})
        batch.notices = [e for e in events if e.action is Action.NOTICE]
        batch.accounts = [e for e in events if e.action is Action.ACCOUNT]
        return batch

    @staticmethod
    def _parse(batch: Batch, records: Sequence[Record], skip_ids: Collection[str]) -> list[Inbound]:
        """The events of `records` to apply; the malformed are poison, duplicates and ignored types counted."""
        events: list[Inbound] = []
        seen: set[str] = set()
        for record in records:
            try:
                event = parse(record)
            except MalformedEvent as exc:
                batch.poison.append((record, exc))
                continue
            if event.event_id in seen or event.event_id in skip_ids:
                batch.duplicates[record.tp] += 1
                continue
            seen.add(event.event_id)
            if event.action is Action.IGNORE:
                batch.ignored[record.tp] += 1
                log.debug("ignoring event %s of type %s", event.event_id, event.type)
                continue
            events.append(event)
        return events

    async def _fetch(self, batch: Batch, events: Sequence[Inbound], answers: Mapping[str, Seen]) -> None:
        """Fetch every observed sandbox once; a failed fetch marks its events' partitions failed."""
        by_sandbox: dict[str, list[Inbound]] = defaultdict(list)
        for event in events:
            if event.action is Action.OBSERVE:
                by_sandbox[str(event.sandbox_id)].append(event)
        # what we hold decides which sandboxes need a fetch at all (`without_fetch`)
        stored = await self.applier.states(list(by_sandbox))
        fetched = await asyncio.gather(
            *(self._observe(sid, evs, stored.get(sid), answers.get(sid)) for sid, evs in by_sandbox.items()),
            return_exceptions=True,
        )
        for (sandbox_id, evs), outcome in zip(by_sandbox.items(), fetched, strict=True):
            if isinstance(outcome, Observation):
                batch.observations.append(outcome)
            elif isinstance(outcome, PoisonEvent):
                batch.poison.extend((e.record, outcome) for e in evs)
            elif isinstance(outcome, Exception):
                log.warning("fetching sandbox %s failed, will retry: %s", sandbox_id, outcome)
                for event in evs:
                    batch.failed.setdefault(event.record.tp, outcome)
            else:  # CancelledError and friends are not ours to swallow
                raise outcome

    async def _observe(
        self, sandbox_id: str, events: list[Inbound], held: Held | None, answer: Seen | None
    ) -> Observation:
        """The sandbox's state after its events: settled by them, how we `held` it and the newest answer of
        Stripe about it (stored, or the batch being applied's `answer`) when they can, else fetched from
        Stripe once for all of them."""
        seen = _newer(held.seen() if held else None, answer)
        told = state_after(events, held.state if held else None, seen)
        self._count("fetched" if told is None else "not_needed")
        if told is not None:
            return Observation(sandbox_id, events, None, told)
        newest = max(events, key=lambda e: (e.created, e.record.offset))
        async with self._fetch_slots:
            for attempt in range(1, self.not_found_attempts + 1):
                try:
                    fetched = await self.stripe.fetch_sandbox(sandbox_id, newest.account)
                    break
                except StripeError as exc:
                    if exc.status not in (400, 404):
                        raise
                    if attempt == self.not_found_attempts:
                        raise SandboxNotFound(
                            f"sandbox {sandbox_id} not found after {attempt} attempts: {exc}"
                        ) from exc
                    await asyncio.sleep(self.not_found_delay_s * 2 ** (attempt - 1))
        return Observation(sandbox_id, events, fetched.data, observed_state(fetched.data), fetched.at)

    def _count(self, how: str) -> None:
        if self.metrics is not None:
            self.metrics.sandbox_fetches.labels(how=how).inc()


def _newer(stored: Seen | None, answer: Seen | None) -> Seen | None:
    """The later of two answers (either may be missing)."""
    if stored is None or (answer is not None and answer.at > stored.at):
        return answer
    return stored
