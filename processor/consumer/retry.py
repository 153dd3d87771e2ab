"""Retries of the lifecycle consumer: a partition whose batch hit a retriable failure (Stripe 429/5xx, the
database down) is paused, rewound to the batch's first offset and resumed after a backoff; the other partitions
keep flowing."""

from __future__ import annotations

import logging
import time
from collections import Counter

from processor.backoff import backoff_delay
from processor.errors import ProcessorError
from processor.eventlog.base import LogConsumer, TopicPartition
from processor.runtime.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class Retries:
    """The retry state of one member: attempts and resume time per partition, and rewinds so far."""

    def __init__(self, metrics: WorkerMetrics, *, base_s: float, max_s: float) -> None:
        self.metrics = metrics
        self.base_s = base_s
        self.max_s = max_s
        self.attempts: dict[TopicPartition, int] = {}
        self._resume_at: dict[TopicPartition, float] = {}
        #: rewinds per partition so far: a batch polled before a rewind of its partition holds stale records
        self.rewinds: Counter[TopicPartition] = Counter()

    async def retry_later(self, consumer: LogConsumer, rewind: dict[TopicPartition, int], error: Exception) -> None:
        """Pause each partition, rewind it to `rewind[tp]`, and resume it after its backoff."""
        code = error.code if isinstance(error, ProcessorError) else type(error).__name__
        if not isinstance(error, ProcessorError) or not error.retriable:
            # not marked retriable but not poison either (a bug, a bad API key): retry rather than lose events
            log.error("batch failed with %s; its partitions are retried", code, exc_info=error)
        owned = consumer.assignment()
        for tp, offset in rewind.items():
            if tp not in owned:  # moved to another member, which reads it again from the last commit
                self.forget(tp)
                continue
            attempt = self.attempts[tp] = self.attempts.get(tp, 0) + 1
            delay = max(self.base_s / 2, backoff_delay(attempt, self.base_s, self.max_s))
            consumer.pause(tp)
            await consumer.seek(tp, offset)
            self.rewinds[tp] += 1
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

    def resume_due(self, consumer: LogConsumer) -> None:
        """Resume the paused partitions whose backoff is over."""
        now = time.monotonic()
        owned = consumer.assignment()
        for tp in [tp for tp in self._resume_at if tp not in owned]:
            self.forget(tp)  # revoked during its backoff: if it comes back, it starts afresh
        due = [tp for tp, at in self._resume_at.items() if at <= now]
        for tp in due:
            del self._resume_at[tp]
        if due:
            consumer.resume(*due)

    def succeeded(self, tp: TopicPartition) -> None:
        """A batch of `tp` was committed: its next failure is a first attempt again."""
        self.attempts.pop(tp, None)

    def forget(self, tp: TopicPartition) -> None:
        """Drop the retry state of a partition this member no longer owns."""
        self._resume_at.pop(tp, None)
        self.attempts.pop(tp, None)

    def reset(self) -> None:
        """A new member starts from the group's commits: the old one's pauses and rewinds mean nothing to it."""
        self._resume_at.clear()
        self.attempts.clear()
