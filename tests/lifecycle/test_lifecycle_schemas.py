"""The message schemas: valid 2020-12 documents, examples pass, broken messages fail, asyncapi is coherent."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from processor import constants
from processor.lifecycle import State
from processor.resources import data_dir
from tests.support.schemas import (
    KINDS,
    SchemaViolation,
    load_schema,
    record_view,
    refs,
    resolve_ref,
    schema_path,
    validate,
)

THIN_EVENT: dict[str, Any] = {
    "id": "evt_test_65R9Ijk8dnq2sHLsTY5Kq5bH1DoTpmVzB0SXd2LWOLFU",
    "object": "v2.core.event",
    "type": "v2.core.claimable_sandbox.claimed",
    "livemode": False,
    "created": "2026-05-01T12:00:00.000Z",
    "context": None,
    "related_object": {
        "id": "clmsbx_test_1",
        "type": "v2.core.claimable_sandbox",
        "url": "/v2/core/claimable_sandboxes/clmsbx_test_1",
    },
}
SNAPSHOT_EVENT: dict[str, Any] = {
    "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
    "object": "event",
    "api_version": "2026-04-22.preview",
    "type": "account.application.deauthorized",
    "created": 1777636800,
    "livemode": False,
    "account": "acct_1RzPFWRlMpFp5RCK",
    "pending_webhooks": 1,
    "request": {"id": None, "idempotency_key": None},
    "data": {"object": {"id": "ca_123", "object": "application", "name": "Bizbot"}},
}
TRANSITION: dict[str, Any] = {
    "specversion": "1.0",
    "id": "clmsbx_test_1:claimed",
    "source": "urn:claimable-sandbox-processor:lifecycle",
    "type": "io.claimable-sandbox-processor.sandbox.transitioned.v1",
    "subject": "clmsbx_test_1",
    "time": "2026-05-01T12:00:00.000Z",
    "datacontenttype": "application/json",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "data": {
        "sandbox_id": "clmsbx_test_1",
        "from_state": "unclaimed",
        "to_state": "claimed",
        "observed": True,
        "event_id": "evt_test_1",
        "occurred_at": "2026-05-01T12:00:00.000Z",
        "sequence": 2,
    },
}
STATE: dict[str, Any] = {
    "sandbox_id": "clmsbx_test_1",
    "state": "claimed",
    "version": 2,
    "updated_at": "2026-05-01T12:00:01.000Z",
    "flags": {"app_deauthorized": False},
    "stripe": None,
    "last_event_id": "evt_test_1",
}
DLQ_RECORD: dict[str, Any] = record_view(
    b"clmsbx_test_1",
    [
        (constants.H_EVENT_ID, THIN_EVENT["id"].encode()),
        (constants.H_EVENT_TYPE, b"v2.core.claimable_sandbox.expired"),
        (constants.H_OBJECT, b"v2.core.event"),
        (constants.H_RECEIVED_AT, b"2026-05-01T12:00:00.500Z"),
        (constants.H_SECRET_INDEX, b"0"),
        (constants.H_ERROR_CLASS, b"lifecycle_anomaly"),
        (constants.H_ERROR_MESSAGE, b"expired cannot follow claimed"),
        (constants.H_FAILED_AT, b"2026-05-01T12:00:02.000Z"),
        (constants.H_ATTEMPTS, b"1"),
        (constants.H_ORIGINAL_TOPIC, b"stripe.events"),
        (constants.H_ORIGINAL_PARTITION, b"3"),
        (constants.H_ORIGINAL_OFFSET, b"1042"),
    ],
    json.dumps(THIN_EVENT).encode(),
)
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "stripe-event": [THIN_EVENT, SNAPSHOT_EVENT],
    "sandbox-transition": [TRANSITION],
    "sandbox-state": [STATE],
    "dlq-record": [DLQ_RECORD],
}


def _without(*path: str) -> Callable[[dict[str, Any]], None]:
    def edit(message: dict[str, Any]) -> None:
        for key in path[:-1]:
            message = message[key]
        del message[path[-1]]

    return edit


def _setting(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def edit(message: dict[str, Any]) -> None:
        for key in path[:-1]:
            message = message[key]
        message[path[-1]] = value

    return edit


#: (kind, example, edit that breaks it, what the edit shows)
BROKEN: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None], str]] = [
    ("stripe-event", THIN_EVENT, _without("id"), "event without id"),
    ("stripe-event", THIN_EVENT, _setting("v3.event", "object"), "unknown object kind"),
    ("stripe-event", THIN_EVENT, _setting(1777636800, "created"), "thin event with v1 integer created"),
    ("stripe-event", THIN_EVENT, _without("related_object", "id"), "related object without id"),
    ("stripe-event", SNAPSHOT_EVENT, _without("data"), "snapshot event without data"),
    ("sandbox-transition", TRANSITION, _setting("0.3", "specversion"), "wrong CloudEvents version"),
    ("sandbox-transition", TRANSITION, _setting("clmsbx_test_1", "id"), "id without the state"),
    ("sandbox-transition", TRANSITION, _setting("archived", "data", "to_state"), "unknown state"),
    ("sandbox-transition", TRANSITION, _setting("yesterday", "time"), "time not RFC 3339"),
    ("sandbox-transition", TRANSITION, _setting("2026-05-01T12:00:00", "time"), "time without offset"),
    ("sandbox-transition", TRANSITION, _setting(False, "data", "observed"), "inferred step with event id"),
    ("sandbox-transition", TRANSITION, _setting(None, "data", "from_state"), "first state not unclaimed"),
    ("sandbox-transition", TRANSITION, _setting(0, "data", "sequence"), "sequence below 1"),
    ("sandbox-transition", TRANSITION, _setting("x", "Trace_Parent"), "invalid extension name"),
    ("sandbox-transition", TRANSITION, _without("data", "observed"), "data without observed"),
    ("sandbox-state", STATE, _without("version"), "snapshot without version"),
    ("sandbox-state", STATE, _setting("CLAIMED", "state"), "state not in the lifecycle"),
    ("sandbox-state", STATE, _setting("yes", "flags", "app_deauthorized"), "flag not boolean"),
    ("sandbox-state", STATE, _setting("x", "extra"), "unknown field"),
    ("dlq-record", DLQ_RECORD, _without("headers", constants.H_ERROR_CLASS), "no error class"),
    ("dlq-record", DLQ_RECORD, _setting("-1", "headers", constants.H_ORIGINAL_OFFSET), "negative offset"),
    ("dlq-record", DLQ_RECORD, _setting("0", "headers", constants.H_ATTEMPTS), "zero attempts"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_a_valid_2020_12_schema(kind: Any) -> None:
    """Each schema file is a valid JSON Schema 2020-12 document."""
    schema = load_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("kind", "example"), [(k, e) for k, examples in EXAMPLES.items() for e in examples])
def test_example_message_validates(kind: Any, example: dict[str, Any]) -> None:
    """A well-formed message of each kind passes its schema."""
    validate(kind, example)


@pytest.mark.parametrize(("kind", "example", "edit", "what"), BROKEN, ids=[case[3] for case in BROKEN])
def test_broken_message_is_rejected(
    kind: Any, example: dict[str, Any], edit: Callable[[dict[str, Any]], None], what: str
) -> None:
    """A message broken in one place fails its schema, naming where."""
    message = copy.deepcopy(example)
    edit(message)
    with pytest.raises(SchemaViolation) as raised:
        validate(kind, message)
    assert raised.value.kind == kind


def test_state_enums_match_the_lifecycle() -> None:
    """The state lists in the transition and state schemas are exactly the lifecycle's states."""
    assert set(load_schema("sandbox-transition")["$defs"]["state"]["enum"]) == set(State)
    assert set(load_schema("sandbox-state")["properties"]["state"]["enum"]) == set(State)


def test_unknown_kind_is_refused() -> None:
    """Asking for a schema that does not exist is a programming error, not a pass."""
    with pytest.raises(ValueError, match="unknown message kind"):
        validate("sandbox-history", {})  # type: ignore[arg-type]


# --- asyncapi.yaml ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((data_dir("schemas") / "asyncapi.yaml").read_text())
    return document




def test_asyncapi_describes_the_four_topics(asyncapi: dict[str, Any]) -> None:
    """asyncapi.yaml is AsyncAPI 3.0 with one channel per topic, the state topic compacted."""
    assert asyncapi["asyncapi"].startswith("3.0")
    channels = {channel["address"]: channel for channel in asyncapi["channels"].values()}
    assert set(channels) == set(constants.ALL_TOPICS)
    policy = channels[constants.TOPIC_STATE]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"]
    assert policy == ["compact"]


def test_asyncapi_references_resolve(asyncapi: dict[str, Any]) -> None:
    """Every $ref points into the document or at an existing schema file of a known kind."""
    found = list(refs(asyncapi))
    files = {ref for ref in found if not ref.startswith("#")}
    assert files == {f"./{schema_path(kind).name}" for kind in KINDS if kind != "dlq-record"}
    for ref in found:
        if ref.startswith("#"):
            assert resolve_ref(asyncapi, ref) is not None
        else:
            assert (data_dir("schemas") / ref).is_file()


def test_asyncapi_headers_are_the_ones_the_code_writes(asyncapi: dict[str, Any]) -> None:
    """The documented input and DLQ header names are those in processor/constants.py and the DLQ schema."""
    schemas = asyncapi["components"]["schemas"]
    assert set(schemas["stripeEventHeaders"]["required"]) == {
        constants.H_EVENT_ID,
        constants.H_EVENT_TYPE,
        constants.H_OBJECT,
        constants.H_RECEIVED_AT,
    }
    # the verifying secret's index is absent only on records recovered from Stripe's Events API
    assert set(schemas["stripeEventHeaders"]["properties"]) == {
        constants.H_EVENT_ID,
        constants.H_EVENT_TYPE,
        constants.H_OBJECT,
        constants.H_RECEIVED_AT,
        constants.H_SECRET_INDEX,
        constants.H_REPLAY_RUN,
        constants.H_REPLAY_OF,
    }
    dlq = {
        constants.H_ERROR_CLASS,
        constants.H_ERROR_MESSAGE,
        constants.H_FAILED_AT,
        constants.H_ATTEMPTS,
        constants.H_ORIGINAL_TOPIC,
        constants.H_ORIGINAL_PARTITION,
        constants.H_ORIGINAL_OFFSET,
    }
    assert set(schemas["deadLetterHeaders"]["required"]) == dlq
    assert set(load_schema("dlq-record")["properties"]["headers"]["required"]) == dlq
    state_headers = asyncapi["components"]["messages"]["sandboxState"]["headers"]
    assert set(state_headers["required"]) == set(state_headers["properties"]) == {"content-type",
                                                                                  constants.H_STATE_VERSION}


def test_asyncapi_payload_schemas_are_copies_of_nothing(asyncapi: dict[str, Any]) -> None:
    """Message payloads reference the schema files instead of inlining a second definition."""
    for name, message in asyncapi["components"]["messages"].items():
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/schema+json;version=2020-12", name
        assert set(payload["schema"]) == {"$ref"}, name
