"""Builders of the outgoing messages: the `sandbox.transitions` CloudEvent and the `sandbox.state` snapshot.

Pure functions returning plain dicts that match schemas/sandbox-transition.schema.json and
schemas/sandbox-state.schema.json; the relay serializes them (orjson) and publishes them keyed by sandbox id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from processor.lifecycle.decision import Step
from processor.lifecycle.state import State
from processor.timestamps import rfc3339 as rfc3339  # re-exported: callers import it from here too

#: CloudEvents `type` of a transition; the `.v1` suffix versions the shape of `data`
TRANSITION_TYPE = "io.claimable-sandbox-processor.sandbox.transitioned.v1"
#: CloudEvents `source` (a URI reference naming the producer)
TRANSITION_SOURCE = "urn:claimable-sandbox-processor:lifecycle"
#: Kafka `content-type` header of a structured-mode CloudEvent (CloudEvents Kafka protocol binding)
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
#: Kafka `content-type` header of a state snapshot
SNAPSHOT_CONTENT_TYPE = "application/json"


def transition_id(sandbox_id: str, to_state: State) -> str:
    """The id of the transition into `to_state`: unique because each state is entered at most once."""
    return f"{sandbox_id}:{to_state}"


def transition_event(
    sandbox_id: str,
    step: Step,
    *,
    sequence: int,
    occurred_at: datetime,
    event_id: str | None,
    source: str = TRANSITION_SOURCE,
) -> dict[str, Any]:
    """The CloudEvent (structured JSON) announcing that sandbox `sandbox_id` took `step`.

    `sequence` numbers the states a sandbox entered, from 1 for its first; `event_id` is the Stripe event that
    reported the state (None for an inferred step, or an observation without an event such as a repair);
    `occurred_at` is when the sandbox entered the state as far as we know: the `created` time of the reporting
    Stripe event, and for inferred steps that of the observation that revealed them.
    """
    if sequence < 1:
        raise ValueError("sequence starts at 1")
    if not step.observed and event_id is not None:
        # an inferred step was reported by no event; naming one would send readers to the wrong event
        raise ValueError("an inferred step has no event_id")
    time = rfc3339(occurred_at)
    return {
        "specversion": "1.0",
        "id": transition_id(sandbox_id, step.to_state),
        "source": source,
        "type": TRANSITION_TYPE,
        "subject": sandbox_id,
        "time": time,
        "datacontenttype": "application/json",
        "data": {
            "sandbox_id": sandbox_id,
            "from_state": None if step.from_state is None else str(step.from_state),
            "to_state": str(step.to_state),
            "observed": step.observed,
            "event_id": event_id,
            "occurred_at": time,
            "sequence": sequence,
        },
    }


def state_snapshot(
    sandbox_id: str,
    state: State,
    *,
    version: int,
    updated_at: datetime,
    flags: Mapping[str, bool] | None = None,
    stripe: Mapping[str, Any] | None = None,
    last_event_id: str | None = None,
) -> dict[str, Any]:
    """The latest snapshot of a sandbox for the compacted `sandbox.state` topic.

    `version` increases with every snapshot of the sandbox, so a reader keeps the highest; `stripe` is
    `observation.stripe_fields(fetched sandbox)`; `flags` such as `app_deauthorized` default to False.
    """
    if version < 1:
        raise ValueError("version starts at 1")
    return {
        "sandbox_id": sandbox_id,
        "state": str(state),
        "version": version,
        "updated_at": rfc3339(updated_at),
        "flags": {"app_deauthorized": False, **(flags or {})},
        "stripe": dict(stripe) if stripe is not None else None,
        "last_event_id": last_event_id,
    }
