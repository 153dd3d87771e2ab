"""schemas/openapi.yaml describes the HTTP interface `processor run` really serves: every route is in it, and
answers of a real server (real PostgreSQL, the real emulator behind the Stripe client) validate against it."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from processor import constants as c
from processor.db.pool import Database
from processor.dev.emulator.config import EmulatorConfig, Knobs
from processor.dev.emulator.runner import running_emulator
from processor.eventlog.postgres.log import PostgresEventLog
from processor.runtime.service import build_http_app
from processor.runtime.serving import serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.schemas import refs, resolve_ref

DOCUMENT = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
BASE = "urn:processor:openapi"
TOKEN = "tok_openapi_test_0123456789abcdef"
WEBHOOK_SECRET = "whsec_openapi_test_0123456789"
METHODS = ("get", "post", "put", "patch", "delete")


def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return document


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)




#: the operator console: HTML pages and forms for people (processor/console, tests/console), not the HTTP API
#: that programs call, which is what the document describes
NOT_THE_API = "/console"


def _routes(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, mounts included; HEAD is Starlette's automatic twin of GET."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if (prefix + getattr(route, "path", "")).startswith(NOT_THE_API):
            continue
        if isinstance(route, Mount):
            found |= _routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            found |= {(m.lower(), prefix + route.path) for m in route.methods or () if m != "HEAD"}
    return found


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item if method in METHODS}


def test_the_document_is_openapi_31_and_every_reference_resolves() -> None:
    """A 3.1 document whose schemas are valid JSON Schema 2020-12 and whose `$ref`s all point somewhere."""
    document = _document()
    assert document["openapi"].startswith("3.1.")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)  # raises, naming what is wrong
    dangling = [ref for ref in refs(document) if _resolve_or_none(document, ref) is None]
    assert dangling == []
    for path, item in document["paths"].items():
        for method in (m for m in item if m in METHODS):
            operation = item[method]
            assert operation.get("operationId"), f"{method} {path} has no operationId"
            assert operation["responses"], f"{method} {path} documents no answer"


def _resolve_or_none(document: dict[str, Any], ref: str) -> Any:
    try:
        return resolve_ref(document, ref)
    except (KeyError, TypeError):
        return None


@dataclasses.dataclass
class Exchange:
    method: str
    path: str
    status: int
    content_type: str
    body: bytes


class Recorder:
    """Every answer the client got, to be checked against the document afterwards."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        self.exchanges.append(Exchange(response.request.method.lower(), response.request.url.path,
                                       response.status_code, content_type, response.content))


@pytest.fixture
async def served(pg_settings: Settings, database: Database, pg_log: PostgresEventLog
                 ) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, Recorder]]:
    """`processor run`'s HTTP app on a real socket, in front of real PostgreSQL and the emulator."""
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=0))) as emu:
        settings = dataclasses.replace(
            pg_settings, stripe_api_key=Secret(emu.api_key), stripe_api_base=emu.base_url,
            api_tokens=(Secret(TOKEN),), signing_key=Secret("openapi-signing-key-0123456789"),
            stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),), stripe_max_rps=1000.0,
        )
        await pg_log.ensure_topics([settings.topic(name) for name in c.ALL_TOPICS])
        async with StripeApi(settings) as stripe:
            app = build_http_app(settings, pg_log, database, stripe)
            recorder = Recorder()
            async with serving(app, lifespan="off") as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                event_hooks={"response": [recorder]},
            ) as client:
                yield app, client, recorder


def test_every_route_of_processor_run_is_documented_and_nothing_else(served: Any) -> None:
    """The router's (method, path) pairs and the document's are the same set."""
    app, _, _ = served
    served_routes = _routes(list(app.routes))
    documented = _documented(_document())
    assert served_routes - documented == set(), "routes missing from schemas/openapi.yaml"
    assert documented - served_routes == set(), "documented routes the app does not serve"


def _signed(body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={mac}", "Content-Type": "application/json"}


async def _dead_letter(log: PostgresEventLog, settings: Settings, sandbox_id: str) -> None:
    body = orjson.dumps({"id": "evt_openapi_dead", "object": "v2.core.event",
                         "type": "v2.core.claimable_sandbox.updated",
                         "related_object": {"id": sandbox_id, "type": "v2.core.claimable_sandbox"}})
    headers = [(c.H_ERROR_CLASS, b"ValidationError"), (c.H_ERROR_MESSAGE, b"a test dead letter"),
               (c.H_FAILED_AT, b"2026-12-02T10:00:00Z"), (c.H_ATTEMPTS, b"1"),
               (c.H_ORIGINAL_TOPIC, settings.topic(c.TOPIC_EVENTS).encode()),
               (c.H_ORIGINAL_PARTITION, b"0"), (c.H_ORIGINAL_OFFSET, b"7")]
    await log.publish(settings.topic(c.TOPIC_DLQ), sandbox_id.encode(), body, headers)


async def _exercise(client: httpx.AsyncClient, log: PostgresEventLog, settings: Settings) -> None:
    """One request per operation that succeeds, and the usual ways to fail."""
    created = await client.post("/v1/sandboxes", json={"email": "dev@platform.test", "country": "us"},
                                headers={"Idempotency-Key": uuid.uuid4().hex})
    assert created.status_code == 201, created.text
    sandbox = created.json()
    await client.post("/v1/sandboxes", json={"email": "not an address", "country": "us"},
                      headers={"Idempotency-Key": uuid.uuid4().hex})
    await client.post("/v1/sandboxes", content=b"[", headers={"Idempotency-Key": uuid.uuid4().hex})
    await client.post("/v1/sandboxes", json={"email": "dev@platform.test", "country": "us"})
    await client.post("/v1/sandboxes", content=b" " * (settings.max_body_bytes + 1),
                      headers={"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"})
    await client.get("/v1/sandboxes", params={"limit": 1})
    await client.get("/v1/sandboxes", params={"limit": 0})
    await client.get("/v1/sandboxes", params={"cursor": "nonsense"})
    await client.get("/v1/sandboxes", headers={"Authorization": "Bearer wrong"})
    await client.get(f"/v1/sandboxes/{sandbox['id']}")
    await client.get("/v1/sandboxes/csb_unknown")
    refresh = httpx.URL(sandbox["refresh_url"])
    await client.get(refresh.path, params=dict(refresh.params))
    await client.get(refresh.path, params={"sig": "forged"})

    await _dead_letter(log, settings, sandbox["id"])
    dead = (await client.get("/v1/ops/dlq", params={"limit": 1})).json()["data"]
    assert dead, "the dead letter published above is listed"
    await client.get(f"/v1/ops/dlq/{dead[0]['coordinate']}")
    await client.get("/v1/ops/dlq/0:999")
    await client.get("/v1/ops/dlq/nonsense")
    dry = await client.post("/v1/ops/replay", json={"source": "dlq", "dry_run": True})
    await _ended(client, dry.headers["location"])
    await client.post("/v1/ops/replay", json={"source": "nowhere"})
    await client.get("/v1/ops/replays")
    await client.get("/v1/ops/replays/replay-dlq-unknown")
    reconcile = await client.post("/v1/ops/reconcile", json={"dry_run": True, "age": "0s"})
    await _ended(client, reconcile.headers["location"])
    purge = await client.post("/v1/ops/dlq/purge", json={"confirm": True, "coordinates": [dead[0]["coordinate"]]})
    await _ended(client, purge.headers["location"])
    await client.post("/v1/ops/dlq/purge", json={})
    await client.get("/v1/ops/jobs")
    await client.get("/v1/ops/jobs/purge-unknown")
    await client.get("/v1/ops/sandboxes", params={"limit": 1})
    await client.get("/v1/ops/sandboxes", params={"state": "unclaimed", "stuck_for": "0s"})
    await client.get(f"/v1/ops/sandboxes/{sandbox['id']}")
    await client.get("/v1/ops/sandboxes/csb_unknown")
    await client.get("/v1/ops/status")
    events = await client.get("/v1/ops/events", params={"limit": 1})
    await client.get("/v1/ops/events", params={"cursor": "%%%"})
    for event in events.json().get("data", []):
        await client.get(f"/v1/ops/events/{event['event_id']}")
    await client.get("/v1/ops/events/evt_unknown")
    await client.get("/v1/ops/account_events/unmatched")

    event = orjson.dumps({"id": "evt_openapi_1", "object": "v2.core.event",
                          "type": "v2.core.claimable_sandbox.updated", "created": "2026-12-02T10:00:00.000Z",
                          "livemode": False, "context": None,
                          "related_object": {"id": sandbox["id"], "type": "v2.core.claimable_sandbox",
                                             "url": f"/v2/core/claimable_sandboxes/{sandbox['id']}"}})
    await client.post("/webhooks/stripe", content=event, headers=_signed(event))
    await client.post("/webhooks/stripe", content=event, headers={"Stripe-Signature": "t=1,v1=00"})
    await client.get("/healthz")
    await client.get("/readyz")
    await client.get("/metrics")


async def _ended(client: httpx.AsyncClient, location: str) -> None:
    """Poll an operator job until it ends (each poll is an answer checked against the document too)."""
    for _ in range(600):
        if (await client.get(location)).json()["status"] != "running":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the job at {location} did not end")


def _operation(document: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method in item:
            return template, item[method]
    raise AssertionError(f"{method.upper()} {path} is not in the document")


def _check(document: dict[str, Any], registry: Registry, exchange: Exchange) -> str | None:
    """None when the answer is one the document describes, else what is wrong with it."""
    template, operation = _operation(document, exchange.method, exchange.path)
    where = f"{exchange.method.upper()} {exchange.path} -> {exchange.status}"
    response = operation["responses"].get(str(exchange.status))
    if response is None:
        return f"{where}: status not documented"
    pointer = _pointer("paths", template, exchange.method, "responses", str(exchange.status))
    if "$ref" in response:
        pointer = response["$ref"].removeprefix("#/")
        response = resolve_ref(document, response["$ref"])
    content = response.get("content")
    if not content:
        return None if not exchange.body else f"{where}: a body where none is documented"
    if exchange.content_type not in content:
        return f"{where}: content type {exchange.content_type!r}, documented {sorted(content)}"
    schema = content[exchange.content_type].get("schema")
    if schema is None:
        return None
    instance = exchange.body.decode() if not exchange.content_type.endswith("json") else orjson.loads(exchange.body)
    ref = f"{BASE}#/{pointer}/{_pointer('content', exchange.content_type, 'schema')}"
    validator = jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    return f"{where}: {errors[:3]}" if errors else None


async def test_real_answers_validate_against_the_document(served: Any, pg_log: PostgresEventLog,
                                                          pg_settings: Settings) -> None:
    """Each operation answered at least once with success, every answer (errors included) as documented."""
    _, client, recorder = served
    await _exercise(client, pg_log, pg_settings)
    document = _document()
    registry: Registry = Registry().with_resource(BASE, Resource.from_contents(document, DRAFT202012))
    problems = [p for p in (_check(document, registry, e) for e in recorder.exchanges) if p is not None]
    assert problems == [], "\n".join(problems)
    succeeded = {(_operation(document, e.method, e.path)[0], e.method) for e in recorder.exchanges
                 if e.status < 400}
    assert {(path, method) for method, path in _documented(document)} - succeeded == set()
    statuses = {e.status for e in recorder.exchanges}
    assert {400, 401, 404, 413, 422} <= statuses  # the failures above were answered, not lost to a 500
