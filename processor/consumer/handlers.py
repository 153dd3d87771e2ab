"""The rows one consumer batch writes, and the handlers that write them when a sandbox enters a state.

Rows are named tuples (one field per column, in the column order of the applier's `unnest` inserts). The
handlers are `StateHandler`s for `processor.lifecycle.walk`: the statechart calls each of them for every state
a sandbox enters, inferred steps included.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import orjson

from processor.lifecycle import Step
from processor.lifecycle.messages import CLOUDEVENTS_CONTENT_TYPE, transition_event, transition_id


class HistoryRow(NamedTuple):
    """A line of a sandbox's history: a transition, a stale or anomalous observation, a notice or a flag."""

    sandbox_id: str
    kind: str
    from_state: str | None
    to_state: str | None
    observed: bool | None
    sequence: int | None
    event_id: str | None
    event_type: str | None
    reason: str | None
    occurred_at: datetime

    @classmethod
    def note(
        cls, sandbox_id: str, kind: str, event_id: str, event_type: str, reason: str, occurred_at: datetime
    ) -> HistoryRow:
        """A line that changes no state (a notice, a flag, a flag's repair): what happened, and which event said so."""
        return cls(sandbox_id, kind, None, None, None, None, event_id, event_type, reason, occurred_at)


class ProcessedRow(NamedTuple):
    """A Stripe event applied (its id makes a redelivery a no-op)."""

    event_id: str
    event_type: str
    sandbox_id: str | None
    outcome: str


class AnomalyRow(NamedTuple):
    sandbox_id: str
    event_id: str
    current_state: str
    observed_state: str
    reason: str


class OutboxRow(NamedTuple):
    """A message for downstream services, published by the relay after the batch commits."""

    topic: str
    key: bytes
    value: bytes
    headers: str
    message_id: str


@dataclass(slots=True)
class Writes:
    """Everything one batch inserts besides the sandboxes rows."""

    history: list[HistoryRow] = field(default_factory=list)
    processed: list[ProcessedRow] = field(default_factory=list)
    anomalies: list[AnomalyRow] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    #: (event id, sandbox id) of account events kept unmatched that a sandbox now matches
    matched_later: list[tuple[str, str]] = field(default_factory=list)


def content_type_headers(content_type: str, extra: dict[str, str] | None = None) -> str:
    return orjson.dumps({"content-type": content_type, **(extra or {})}).decode()


@dataclass(frozen=True, slots=True)
class Reporting:
    """The Stripe event whose observation the steps come from: it names the observed step, and its time
    stands for every step it revealed."""

    event_id: str | None
    event_type: str
    occurred_at: datetime


@dataclass(slots=True)
class HistoryOnEntry:
    """Writes a `transition` history row for each state entered."""

    sandbox_id: str
    reporting: Reporting
    writes: Writes

    def entered(self, step: Step, sequence: int) -> None:
        self.writes.history.append(
            HistoryRow(
                self.sandbox_id,
                "transition",
                None if step.from_state is None else str(step.from_state),
                str(step.to_state),
                step.observed,
                sequence,
                self.reporting.event_id if step.observed else None,
                self.reporting.event_type if step.observed else None,
                None,
                self.reporting.occurred_at,
            )
        )


@dataclass(slots=True)
class PublishOnEntry:
    """Queues the CloudEvent announcing each state entered on the transitions topic (through the outbox)."""

    sandbox_id: str
    reporting: Reporting
    writes: Writes
    topic: str

    def entered(self, step: Step, sequence: int) -> None:
        message = transition_event(
            self.sandbox_id,
            step,
            sequence=sequence,
            occurred_at=self.reporting.occurred_at,
            event_id=self.reporting.event_id if step.observed else None,
        )
        self.writes.outbox.append(
            OutboxRow(
                self.topic,
                self.sandbox_id.encode(),
                orjson.dumps(message),
                content_type_headers(CLOUDEVENTS_CONTENT_TYPE),
                transition_id(self.sandbox_id, step.to_state),
            )
        )


@dataclass(slots=True)
class CountOnEntry:
    """Counts states entered, by target state (the consumer's transition metric)."""

    counts: Counter[str]

    def entered(self, step: Step, sequence: int) -> None:
        self.counts[str(step.to_state)] += 1
