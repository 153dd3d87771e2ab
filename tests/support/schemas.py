"""JSON Schema validation of every message on every topic, against the files in schemas/ (2020-12).

`validate(kind, value)` raises `SchemaViolation` naming the first violated rule; the tests call it on every
message they read from a topic, so a producer can never drift from the published contract unnoticed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jsonschema

from processor.errors import ProcessorError
from processor.resources import data_dir

Kind = Literal["stripe-event", "sandbox-transition", "sandbox-state", "dlq-record"]
KINDS: tuple[Kind, ...] = ("stripe-event", "sandbox-transition", "sandbox-state", "dlq-record")


class SchemaViolation(ProcessorError):
    """A message does not match its topic's schema."""

    code = "schema_violation"

    def __init__(self, kind: str, message: str, path: str) -> None:
        super().__init__(f"{kind}: {message} (at {path or 'the top level'})")
        self.kind = kind
        self.path = path


def schema_path(kind: Kind) -> Path:
    """The file holding the schema of `kind`."""
    return data_dir("schemas") / f"{kind}.schema.json"


def load_schema(kind: Kind) -> dict[str, Any]:
    """The parsed schema document of `kind`."""
    with open(schema_path(kind), encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document


_format_checker = jsonschema.FormatChecker()


def _is_date_time(value: object) -> bool:
    # jsonschema only checks date-time with an optional package; RFC 3339 requires the T and an offset
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        return False
    return datetime.fromisoformat(value).tzinfo is not None


_format_checker.checks("date-time", raises=ValueError)(_is_date_time)


@functools.cache
def _validator(kind: Kind) -> Any:
    schema = load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=_format_checker)


def validate(kind: Kind, value: Mapping[str, Any]) -> None:
    """Raise `SchemaViolation` unless `value` (a decoded message) matches the schema of `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; expected one of {KINDS}")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(value))
    if error is not None:
        raise SchemaViolation(kind, error.message, error.json_path)


def record_view(
    key: bytes | None, headers: Iterable[tuple[str, bytes | None]], value: bytes
) -> dict[str, Any]:
    """A Kafka record as dlq-record.schema.json describes it: key and headers as text, value as JSON."""
    return {
        "key": None if key is None else key.decode(),
        "headers": {name: "" if raw is None else raw.decode() for name, raw in headers},
        "value": json.loads(value),
    }


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` in a JSON/YAML document (OpenAPI, AsyncAPI, JSON Schema), depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve_ref(document: dict[str, Any], ref: str) -> Any:
    """The node a local `#/...` reference points at (JSON Pointer, `~1` and `~0` unescaped); KeyError if none."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node
