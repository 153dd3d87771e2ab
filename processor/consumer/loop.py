"""The lifecycle consumer: group `lifecycle` on stripe.events, driving every sandbox through its states.

Per batch: parse, dedupe by event id (in the batch, then against processed_events), group observations by
sandbox, fetch each sandbox ONCE (rate-limited, retried), decide, apply everything in one DB transaction,
dead-letter the poison, and only then commit the offsets. A retriable failure (Stripe 429/5xx, database down)
pauses the affected partitions, rewinds them to the batch start and retries after a backoff; the other
partitions keep flowing. Nothing is dead-lettered for a retriable failure.

Batches are pipelined, one deep: while batch N's transaction and offset commit run, batch N+1 is polled, parsed
and fetched. Transactions and commits stay strictly in batch order (so per partition in offset order, and each
commit after its own transaction); N+1 treats N's event ids as already processed, and drops its records of any
partition that N rewound, since those are read again from N's first offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from processor import constants as c
from processor.consumer.applier import Applier, Observation
from processor.consumer.deadletter import dlq_record
from processor.consumer.inbound import Action, Inbound, MalformedEvent, parse
from processor.db.pool import Database
from processor.errors import CommitRejected, LogUnavailable, PoisonEvent, ProcessorError, StripeError
from processor.eventlog.base import EventLog, LogConsumer, Record, TopicPartition
from processor.lifecycle import State, observed_state
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings
from processor.stripe_api.client import StripeApi, backoff_delay

log = logging.getLogger(__name__)

#: a sandbox sitting in claimed .. installed this long is reported as stuck (users finish in minutes to hours)
STUCK_AFTER_S = 24 * 3600.0


class SandboxNotFound(PoisonEvent):
    """Stripe does not know the sandbox an event names (404), even after a few tries."""

    code = "sandbox_not_found"


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Tuning of one consumer; the defaults suit one process on a small machine."""

    #: records per poll: bigger batches coalesce more fetches per sandbox and amortise the transaction
    batch_size: int = 2000
    poll_timeout_s: float = 0.5
    #: Stripe fetches in flight at once (the token bucket still caps the rate)
    fetch_concurrency: int = 256
    #: a 404 right after an event can be replication lag on Stripe's side: try this often before giving up
    not_found_attempts: int = 3
    not_found_delay_s: float = 0.3
    #: backoff of a paused partition after a retriable failure: base * 2**(n-1) with jitter, capped
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    #: how often the lag gauge is refreshed: an operator watching a backlog drain sees it within seconds
    lag_interval_s: float = 3.0


@dataclass(slots=True)
class _Batch:
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

    def applying_ids(self) -> set[str]:
        """Ids the transaction records as processed: the next batch, prepared meanwhile, treats them as done."""
        ids = {e.event_id for o in self.observations for e in o.events}
        ids.update(e.event_id for e in self.notices)
        ids.update(e.event_id for e in self.accounts)
        return ids


class LifecycleConsumer:
    """One member of the lifecycle group. `await LifecycleConsumer(...).run(stop_event)`."""

    def __init__(
        self,
        settings: Settings,
        log_: EventLog,
        database: Database,
        stripe: StripeApi,
        *,
        metrics: WorkerMetrics | None = None,
        options: ConsumerOptions | None = None,
        outbox_signal: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.log = log_
        self.stripe = stripe
        self.metrics = metrics or WorkerMetrics()
        self.options = options or ConsumerOptions()
        self.outbox_signal = outbox_signal
        self.topic = settings.topic(c.TOPIC_EVENTS)
        #: the topic prefix namespaces an environment, so it namespaces the group too
        self.group = settings.topic(c.GROUP_LIFECYCLE)
        self.dlq_topic = settings.topic(c.TOPIC_DLQ)
        self.applier = Applier(database.pool, settings.topic(c.TOPIC_TRANSITIONS), settings.topic(c.TOPIC_STATE))
        self._fetch_slots = asyncio.Semaphore(self.options.fetch_concurrency)
        self._attempts: dict[TopicPartition, int] = {}
        self._resume_at: dict[TopicPartition, float] = {}
        #: rewinds per partition so far: a batch polled before a rewind of its partition holds stale records
        self._rewinds: Counter[TopicPartition] = Counter()
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: LogConsumer | None = None
        #: monotonic time the loop last made progress (liveness)
        self.last_beat = time.monotonic()
        self.batches = 0
        #: when the current outage of the event log began (None while connected), and failed joins since
        self._outage_since: float | None = None
        self._outage_attempts = 0

    def alive(self, within_s: float = 120.0) -> bool:
        """True while the loop is turning (a stuck loop fails /healthz and gets restarted)."""
        return time.monotonic() - self.last_beat < within_s

    def connected(self) -> bool:
        """True while this member reads the event log (readiness): false until it joined and during an outage."""
        return self._consumer is not None and self._outage_since is None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then finish the batches in hand, commit, and leave the group.

        When the event log fails under the member (a poll, a commit, a heartbeat: `LogUnavailable`), it leaves
        and joins again with backoff until the log answers, and goes on from the last commit; what was applied
        but not committed comes back as duplicates. Any other error ends the consumer and is raised."""
        while not stop.is_set():
            try:
                await self._member(stop)
            except LogUnavailable as exc:
                self._lost_log(exc)
                self.last_beat = time.monotonic()  # waiting for the log is not a stuck loop
                delay = backoff_delay(self._outage_attempts, self.options.retry_base_s, self.options.retry_max_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(delay, self.options.retry_base_s / 2))
        log.info("lifecycle consumer stopped after %d batches", self.batches)

    def _lost_log(self, error: LogUnavailable) -> None:
        """Note a failed membership; logged once per outage, not once per attempt."""
        # a new member starts from the group's commits: the old one's pauses and rewinds mean nothing to it
        self._resume_at.clear()
        self._attempts.clear()
        self._committed.clear()
        self._outage_attempts += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("lifecycle consumer lost the event log, joining again until it answers: %s", error)
        else:
            log.debug("event log still unavailable (attempt %d): %s", self._outage_attempts, error)

    def _log_answered(self) -> None:
        if self._outage_since is not None:
            log.warning(
                "lifecycle consumer reads the event log again after %.1fs (%d attempts)",
                time.monotonic() - self._outage_since, self._outage_attempts,
            )
            self._outage_since, self._outage_attempts = None, 0

    async def _member(self, stop: asyncio.Event) -> None:
        """One membership of the group: join, consume until `stop` is set or the log fails, leave."""
        consumer = self.log.consumer(self.group, [self.topic])
        lag_task: asyncio.Task[None] | None = None
        async with consumer:
            self._consumer = consumer
            lag_task = asyncio.create_task(self._watch_lag(stop), name="consumer-lag")
            # The previous batch's transaction and commit, running while the next batch is polled and fetched;
            # `applying_ids` are its events, which that next batch must not apply a second time. A rewind it
            # does after the next batch was polled makes that batch's records of the partition stale (they are
            # read again from the rewound offset), so they are dropped; records polled after the rewind (the
            # log drops what a fetch in flight read before it) are the re-read ones, and are kept.
            applying: asyncio.Task[None] | None = None
            applying_ids: Collection[str] = ()
            try:
                while not stop.is_set():
                    self.last_beat = time.monotonic()
                    self._resume_due(consumer)
                    records = await consumer.poll(self.options.batch_size, self.options.poll_timeout_s)
                    self._log_answered()
                    rewinds_at_poll = self._rewinds.copy()
                    if not records:
                        if applying is not None and applying.done():
                            applying.result()  # re-raises what ended the batch (the log failing on commit)
                            applying, applying_ids = None, ()
                        continue
                    batch = await self._prepare_or_error(records, applying_ids)
                    if applying is not None:
                        await applying
                        applying, applying_ids = None, ()
                    rewound = {tp for tp, count in self._rewinds.items() if rewinds_at_poll[tp] != count}
                    if isinstance(batch, Exception):  # read all of it again later (but not before a rewind)
                        first: dict[TopicPartition, int] = {}
                        for record in records:
                            first.setdefault(record.tp, record.offset)
                        rewind = {tp: offset for tp, offset in first.items() if tp not in rewound}
                        await self._retry_later(consumer, rewind, batch)
                        continue
                    batch.drop(rewound)
                    applying_ids = batch.applying_ids()
                    applying = asyncio.create_task(self._finish(consumer, batch), name="consumer-batch")
            finally:
                if applying is not None:
                    await applying
                lag_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lag_task
                self._consumer = None

    # --- one batch -----------------------------------------------------------------------------------------
    async def _prepare_or_error(self, records: Sequence[Record], skip_ids: Collection[str]) -> _Batch | Exception:
        """`_prepare`, or the error that kept the whole batch from being prepared (database, log)."""
        try:
            return await self._prepare(records, skip_ids)
        except Exception as exc:  # the caller retries all of the batch's partitions
            return exc

    async def _finish(self, consumer: LogConsumer, batch: _Batch) -> None:
        """Apply a prepared batch, then commit it; partitions that failed are rewound for a retry."""
        self.batches += 1
        if not batch.records:
            return
        try:
            failed = await self._apply(batch)
        except Exception as exc:  # a failure of the whole batch (database, log): retry all of its partitions
            await self._retry_later(consumer, batch.first, exc)
            return
        if failed:
            await self._retry_later(consumer, {tp: batch.first[tp] for tp in failed}, failed[next(iter(failed))])
        offsets: dict[TopicPartition, int] = {}
        for record in batch.records:
            if record.tp not in failed:
                offsets[record.tp] = record.offset + 1
        try:
            await consumer.commit(offsets)
        except CommitRejected as exc:
            # the partitions moved to another member, which reads them again from the last commit: the
            # effects are already in the database, so that redelivery is a no-op
            log.warning("offsets not committed: %s", exc)
            return
        self._committed.update(offsets)
        for tp in offsets:
            self._attempts.pop(tp, None)

    async def _prepare(self, records: Sequence[Record], skip_ids: Collection[str]) -> _Batch:
        """Parse, deduplicate (in the batch, `skip_ids`, processed_events) and fetch each sandbox once."""
        batch = _Batch(list(records), {})
        for record in records:
            batch.first.setdefault(record.tp, record.offset)
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
        done = await self.applier.already_processed([e.event_id for e in events])
        batch.duplicates.update(e.record.tp for e in events if e.event_id in done)
        events = [e for e in events if e.event_id not in done]

        by_sandbox: dict[str, list[Inbound]] = defaultdict(list)
        for event in events:
            if event.action is Action.OBSERVE:
                by_sandbox[str(event.sandbox_id)].append(event)
        fetched = await asyncio.gather(
            *(self._observe(sid, evs) for sid, evs in by_sandbox.items()), return_exceptions=True
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
        batch.notices = [e for e in events if e.action is Action.NOTICE]
        batch.accounts = [e for e in events if e.action is Action.ACCOUNT]
        return batch

    async def _apply(self, batch: _Batch) -> dict[TopicPartition, Exception]:
        """Apply a batch; returns the partitions that hit a retriable error (their records are not applied)."""
        failed = batch.failed
        # Everything that succeeded is still applied (its redelivery is then a cheap duplicate), so a retry only
        # re-fetches the sandboxes that failed: under a high error rate the partition makes progress instead of
        # needing every fetch of a batch to succeed at once. The offsets of a failed partition are not
        # committed, and its poison waits for the retry so it is dead-lettered only once.
        poison = [(r, exc) for r, exc in batch.poison if r.tp not in failed]
        # a failed partition's duplicates and ignored events are counted when it is read again
        duplicates = sum(n for tp, n in batch.duplicates.items() if tp not in failed)
        ignored = sum(n for tp, n in batch.ignored.items() if tp not in failed)
        result = await self.applier.apply(batch.observations, batch.notices, batch.accounts)
        poison.extend((event.record, error) for event, error in result.poison if event.record.tp not in failed)
        if poison:
            await self.log.publish_many(
                [
                    dlq_record(
                        self.dlq_topic,
                        record,
                        error,
                        self._attempts.get(record.tp, 0) + 1
                        if not isinstance(error, SandboxNotFound)
                        else self.options.not_found_attempts,
                    )
                    for record, error in poison
                ]
            )
            for record, error in poison:
                log.warning(
                    "dead-lettered %s/%d@%d: %s: %s", record.topic, record.partition, record.offset, error.code, error
                )
                self.metrics.dlq.labels(error_class=error.code).inc()
        self._count(result.outcomes, duplicates, ignored, len(poison))
        for state, count in result.transitions.items():
            self.metrics.transitions.labels(to_state=state).inc(count)
        if result.outbox_rows and self.outbox_signal is not None:
            self.outbox_signal.set()
        return failed

    async def _observe(self, sandbox_id: str, events: list[Inbound]) -> Observation:
        """Fetch the sandbox once for all its events and read its lifecycle state."""
        newest = max(events, key=lambda e: (e.created, e.record.offset))
        async with self._fetch_slots:
            for attempt in range(1, self.options.not_found_attempts + 1):
                try:
                    sandbox = await self.stripe.retrieve_sandbox(sandbox_id, newest.account)
                    break
                except StripeError as exc:
                    if exc.status not in (400, 404):
                        raise
                    if attempt == self.options.not_found_attempts:
                        raise SandboxNotFound(
                            f"sandbox {sandbox_id} not found after {attempt} attempts: {exc}"
                        ) from exc
                    await asyncio.sleep(self.options.not_found_delay_s * 2 ** (attempt - 1))
        return Observation(sandbox_id, events, sandbox, observed_state(sandbox))

    def _count(self, outcomes: dict[str, int], duplicates: int, ignored: int, dead: int) -> None:
        for outcome, count in outcomes.items():
            self.metrics.events.labels(outcome=outcome).inc(count)
        if duplicates:
            self.metrics.events.labels(outcome="duplicate").inc(duplicates)
        if ignored:
            self.metrics.events.labels(outcome="ignored").inc(ignored)
        if dead:
            self.metrics.events.labels(outcome="dead_lettered").inc(dead)

    # --- retries ---------------------------------------------------------------------------------------------
    async def _retry_later(self, consumer: LogConsumer, rewind: dict[TopicPartition, int], error: Exception) -> None:
        """Pause each partition, rewind it to `rewind[tp]`, and resume it after its backoff."""
        code = error.code if isinstance(error, ProcessorError) else type(error).__name__
        if not isinstance(error, ProcessorError) or not error.retriable:
            # not marked retriable but not poison either (a bug, a bad API key): retry rather than lose events
            log.error("batch failed with %s; its partitions are retried", code, exc_info=error)
        owned = consumer.assignment()
        for tp, offset in rewind.items():
            if tp not in owned:  # moved to another member, which reads it again from the last commit
                self._forget(tp)
                continue
            attempt = self._attempts[tp] = self._attempts.get(tp, 0) + 1
            delay = max(
                self.options.retry_base_s / 2,
                backoff_delay(attempt, self.options.retry_base_s, self.options.retry_max_s),
            )
            consumer.pause(tp)
            await consumer.seek(tp, offset)
            self._rewinds[tp] += 1
            self._resume_at[tp] = time.monotonic() + delay
            self.metrics.retries.labels(error_class=code).inc()
            log.warning(
                "partition %s/%d paused for %.1fs (attempt %d) after %s: %s",
                tp.topic,
                tp.partition,
                delay,
                attempt,
                code,
                error,
            )

    def _resume_due(self, consumer: LogConsumer) -> None:
        now = time.monotonic()
        owned = consumer.assignment()
        for tp in [tp for tp in self._resume_at if tp not in owned]:
            self._forget(tp)  # revoked during its backoff: if it comes back, it starts afresh
        due = [tp for tp, at in self._resume_at.items() if at <= now]
        for tp in due:
            del self._resume_at[tp]
        if due:
            consumer.resume(*due)

    def _forget(self, tp: TopicPartition) -> None:
        """Drop the retry state of a partition this member no longer owns."""
        self._resume_at.pop(tp, None)
        self._attempts.pop(tp, None)

    # --- lag -------------------------------------------------------------------------------------------------
    async def _watch_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a gauge must never take the consumer down
                await self._update_lag()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.lag_interval_s)

    async def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        ends = await self.log.end_offsets(self.topic)
        lag = 0
        for tp in consumer.assignment():
            committed = self._committed.get(tp)
            if committed is None:
                committed = await consumer.committed(tp) or 0
            lag += max(0, ends.get(tp, 0) - committed)
        self.metrics.lag.set(lag)
        async with self.applier.pool.acquire() as conn:
            stuck = await conn.fetchval(
                "SELECT count(*) FROM sandboxes WHERE state <> ALL($1::text[])"
                " AND updated_at < now() - make_interval(secs => $2)",
                [str(State.UNCLAIMED), str(State.LIVE), str(State.EXPIRED)],
                STUCK_AFTER_S,
            )
        self.metrics.sandboxes_stuck.set(stuck)


async def run_consumer(
    settings: Settings,
    log_: EventLog,
    db: Database,
    stop_event: asyncio.Event,
    *,
    stripe: StripeApi | None = None,
    metrics: WorkerMetrics | None = None,
    options: ConsumerOptions | None = None,
    outbox_signal: asyncio.Event | None = None,
) -> None:
    """Run one lifecycle consumer until `stop_event` is set (library entry point for `processor run`)."""
    metrics = metrics or WorkerMetrics()
    async with contextlib.AsyncExitStack() as stack:
        if stripe is None:
            stripe = await stack.enter_async_context(StripeApi(settings, on_response=metrics.observe_stripe))
        consumer = LifecycleConsumer(
            settings, log_, db, stripe, metrics=metrics, options=options, outbox_signal=outbox_signal
        )
        await consumer.run(stop_event)
