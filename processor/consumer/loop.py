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

Preparing a batch is processor.consumer.batch, applying it processor.consumer.applier, pausing and rewinding
partitions processor.consumer.retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from processor import constants as c
from processor.backoff import backoff_delay
from processor.consumer.applier import Applier
from processor.consumer.batch import Batch, BatchPreparer, SandboxNotFound, first_offsets
from processor.consumer.deadletter import dlq_record
from processor.consumer.retry import Retries
from processor.db.pool import Database
from processor.errors import CommitRejected, LogUnavailable, PoisonEvent
from processor.eventlog.base import EventLog, LogConsumer, Record, TopicPartition
from processor.lifecycle import State
from processor.lifecycle.without_fetch import Seen
from processor.runtime.metrics import WorkerMetrics
from processor.settings import Settings
from processor.stripe_api.budget import shared_budget
from processor.stripe_api.client import StripeApi

log = logging.getLogger(__name__)

#: a sandbox sitting in claimed .. installed this long is reported as stuck (users finish in minutes to hours)
STUCK_AFTER_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Tuning of one consumer; the defaults suit one process on a small machine."""

    #: records per poll: bigger batches coalesce more fetches per sandbox and amortise the transaction
    batch_size: int = 2000
    poll_timeout_s: float = 0.5
    #: Stripe fetches in flight at once (the key's shared budget still caps the rate)
    fetch_concurrency: int = 256
    #: a 404 right after an event can be replication lag on Stripe's side: try this often before giving up
    not_found_attempts: int = 3
    not_found_delay_s: float = 0.3
    #: backoff of a paused partition after a retriable failure: base * 2**(n-1) with jitter, capped
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    #: how often the lag gauge is refreshed: an operator watching a backlog drain sees it within seconds
    lag_interval_s: float = 3.0


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
        self.preparer = BatchPreparer(
            self.applier,
            stripe,
            fetch_concurrency=self.options.fetch_concurrency,
            not_found_attempts=self.options.not_found_attempts,
            not_found_delay_s=self.options.not_found_delay_s,
            metrics=self.metrics,
        )
        self.retries = Retries(self.metrics, base_s=self.options.retry_base_s, max_s=self.options.retry_max_s)
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
        self.retries.reset()
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
            #: Stripe's answers that batch fetched: the next one's events created before them need no fetch
            applying_answers: Mapping[str, Seen] = {}
            try:
                while not stop.is_set():
                    self.last_beat = time.monotonic()
                    self.retries.resume_due(consumer)
                    records = await consumer.poll(self.options.batch_size, self.options.poll_timeout_s)
                    self._log_answered()
                    rewinds_at_poll = self.retries.rewinds.copy()
                    if not records:
                        if applying is not None and applying.done():
                            applying.result()  # re-raises what ended the batch (the log failing on commit)
                            applying, applying_ids, applying_answers = None, (), {}
                        continue
                    batch = await self._prepare_or_error(records, applying_ids, applying_answers)
                    if applying is not None:
                        await applying
                        applying, applying_ids, applying_answers = None, (), {}
                    rewound = {tp for tp, count in self.retries.rewinds.items() if rewinds_at_poll[tp] != count}
                    if isinstance(batch, Exception):  # read all of it again later (but not before a rewind)
                        rewind = {tp: offset for tp, offset in first_offsets(records).items() if tp not in rewound}
                        await self.retries.retry_later(consumer, rewind, batch)
                        continue
                    batch.drop(rewound)
                    applying_ids, applying_answers = batch.applying_ids(), batch.answers()
                    applying = asyncio.create_task(self._finish(consumer, batch), name="consumer-batch")
            finally:
                if applying is not None:
                    await applying
                lag_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lag_task
                self._consumer = None

    # --- one batch -----------------------------------------------------------------------------------------
    async def _prepare_or_error(
        self, records: Sequence[Record], skip_ids: Collection[str], answers: Mapping[str, Seen]
    ) -> Batch | Exception:
        """The prepared batch, or the error that kept the whole batch from being prepared (database, log)."""
        try:
            return await self.preparer.prepare(records, skip_ids, answers)
        except Exception as exc:  # the caller retries all of the batch's partitions
            return exc

    async def _finish(self, consumer: LogConsumer, batch: Batch) -> None:
        """Apply a prepared batch, then commit it; partitions that failed are rewound for a retry."""
        self.batches += 1
        if not batch.records:
            return
        try:
            failed = await self._apply(batch)
        except Exception as exc:  # a failure of the whole batch (database, log): retry all of its partitions
            await self.retries.retry_later(consumer, batch.first, exc)
            return
        if failed:
            await self.retries.retry_later(consumer, {tp: batch.first[tp] for tp in failed}, failed[next(iter(failed))])
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
            self.retries.succeeded(tp)

    async def _apply(self, batch: Batch) -> dict[TopicPartition, Exception]:
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
            await self._dead_letter(poison)
        self._count(result.outcomes, duplicates, ignored, len(poison))
        for state, count in result.transitions.items():
            self.metrics.transitions.labels(to_state=state).inc(count)
        if result.outbox_rows and self.outbox_signal is not None:
            self.outbox_signal.set()
        return failed

    async def _dead_letter(self, poison: Sequence[tuple[Record, PoisonEvent]]) -> None:
        """Publish each poison record to the DLQ with its error and attempts, and count it."""
        await self.log.publish_many(
            [
                dlq_record(
                    self.dlq_topic,
                    record,
                    error,
                    self.retries.attempts.get(record.tp, 0) + 1
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

    def _count(self, outcomes: dict[str, int], duplicates: int, ignored: int, dead: int) -> None:
        for outcome, count in outcomes.items():
            self.metrics.events.labels(outcome=outcome).inc(count)
        if duplicates:
            self.metrics.events.labels(outcome="duplicate").inc(duplicates)
        if ignored:
            self.metrics.events.labels(outcome="ignored").inc(ignored)
        if dead:
            self.metrics.events.labels(outcome="dead_lettered").inc(dead)

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
            budget = shared_budget(settings, db.pool, metrics.budget)
            stripe = await stack.enter_async_context(
                StripeApi(settings, on_response=metrics.observe_stripe, budget=budget)
            )
        consumer = LifecycleConsumer(
            settings, log_, db, stripe, metrics=metrics, options=options, outbox_signal=outbox_signal
        )
        await consumer.run(stop_event)
