"""The Stripe API surface: /v2 claimable sandboxes and events (JSON bodies), /v1 events (snapshot events)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processor.dev.emulator import errors, ids
from processor.dev.emulator.clock import parse_timestamp
from processor.dev.emulator.config import MIN_PREVIEW_VERSION
from processor.dev.emulator.state import EmulatorState
from processor.dev.emulator.store import IdempotencyRecord

Handler = Callable[[Request, EmulatorState, "Call"], Awaitable[tuple[int, dict[str, Any]]]]

_PREVIEW_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2})\.preview(?:-v2)?$")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class Call:
    """What a handler needs to know about the authenticated request."""

    def __init__(self, api_key: str, request_id: str, context: str | None, body: dict[str, Any]) -> None:
        self.api_key = api_key
        self.request_id = request_id
        self.context = context
        self.body = body
        self.idempotency_key: str | None = None


def _authenticate(request: Request, state: EmulatorState) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":  # curl -u sk_test_...: works on Stripe too
        try:
            value = base64.b64decode(value).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            value = ""
    elif scheme.lower() != "bearer":
        raise errors.unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
        )
    # compare against every configured key in constant time so timing does not reveal a prefix
    matched = False
    for key in state.config.api_keys:
        matched |= hmac.compare_digest(key.encode(), value.strip().encode())
    if not matched:
        masked = value[:8] + "*" * max(0, len(value) - 12) + value[-4:] if len(value) > 12 else "****"
        raise errors.unauthorized(f"Invalid API Key provided: {masked}")
    return value.strip()


def _check_version(request: Request) -> None:
    version = request.headers.get("stripe-version")
    if not version:
        raise errors.invalid(
            "Stripe-Version header is required for /v2 claimable sandboxes; "
            f"send a preview version from {MIN_PREVIEW_VERSION}.preview on.",
            code="invalid_api_version",
        )
    match = _PREVIEW_VERSION.match(version.strip())
    if match is None or match.group(1) < MIN_PREVIEW_VERSION:
        raise errors.invalid(
            f"Stripe-Version {version!r} does not have claimable sandboxes; "
            f"use a preview version from {MIN_PREVIEW_VERSION}.preview on.",
            code="invalid_api_version",
        )


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise errors.invalid("The request body must be a JSON object.", code="invalid_json")
    return body


def _fingerprint(request: Request, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.url.path}\n{canonical}".encode()).hexdigest()


def _replayed(
    state: EmulatorState, api_key: str, key: str, fingerprint: str, headers: dict[str, str]
) -> Response | None:
    """The saved answer to an earlier request with this idempotency key, as Stripe replays it; None if there
    is none. The same key with other parameters is an error."""
    previous = state.store.idempotent(api_key, key)
    if previous is None:
        return None
    if not hmac.compare_digest(previous.fingerprint, fingerprint):
        raise errors.ApiError(
            400,
            "idempotency_error",
            "idempotency_key_in_use",
            "Keys for idempotent requests can only be used with the same parameters they "
            "were first used with. Try using a key other than "
            f"'{key}' if you meant to execute a different request.",
        )
    return Response(
        previous.body,
        previous.status,
        headers={**headers, "Idempotent-Replayed": "true", "Idempotency-Key": key},
        media_type="application/json",
    )


def endpoint(handler: Handler, *, v2: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with what every Stripe API call goes through: auth, version, faults, idempotency."""

    async def run(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        request_id = ids.request_id()
        headers = {"Request-Id": request_id}
        try:
            api_key = _authenticate(request, state)
            if v2:
                _check_version(request)
                headers["Stripe-Version"] = request.headers["stripe-version"]
            await state.faults.apply(hashlib.sha256(api_key.encode()).hexdigest(), handler.__name__)
            body = await _json_body(request) if request.method == "POST" else {}
            call = Call(api_key, request_id, request.headers.get("stripe-context") or None, body)
            key = request.headers.get("idempotency-key") if request.method == "POST" else None
            if key:
                fingerprint = _fingerprint(request, body)
                replayed = _replayed(state, api_key, key, fingerprint, headers)
                if replayed is not None:
                    return replayed
                call.idempotency_key = key
            status, payload = await handler(request, state, call)
            response_body = json.dumps(payload).encode()
            if key and 200 <= status < 300:
                # only requests that ran are saved, as on Stripe: a failed validation can be retried
                state.store.remember(
                    api_key, key, IdempotencyRecord(fingerprint, status, response_body, state.clock.now())
                )
                headers["Idempotency-Key"] = key
            return Response(response_body, status, headers=headers, media_type="application/json")
        except errors.ApiError as exc:
            response = exc.response(request_id)
            response.headers.update({k: v for k, v in headers.items() if k != "Request-Id"})
            return response

    return run


# --- handlers ---------------------------------------------------------------------------------------
async def create_sandbox(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    reason = None
    if call.idempotency_key:
        reason = {
            "type": "request",
            "request": {"id": call.request_id, "idempotency_key": call.idempotency_key},
        }
    record, keys = state.sandboxes.create(call.body, reason)
    return 200, record.to_api(api_keys=keys)


async def retrieve_sandbox(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    return 200, state.sandboxes.read(request.path_params["id"], call.context).to_api()


async def renew_link(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    return 200, state.sandboxes.renew_link(request.path_params["id"], call.body, call.context).to_api()


async def retrieve_event(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    event_id = request.path_params["id"]
    record = state.store.event(event_id)
    if record is None or not record.is_v2 or (call.context and record.context not in (None, call.context)):
        raise errors.not_found("event", event_id)
    return 200, record.to_api()


def _timestamp_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError:
        raise errors.invalid(f"{name} must be an RFC 3339 timestamp", param=name) from None


def _unix_param(request: Request, name: str) -> datetime | None:
    """A v1 time filter: unix seconds. Compared against events' whole-second `created`, as Stripe does."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise errors.invalid(f"{name} must be a unix timestamp", param=name)
    moment = datetime.fromtimestamp(int(raw), UTC)
    # v1 `created` has whole seconds: an event at 12.7 s is `created` 12, so `lte 12` includes it
    return moment + timedelta(seconds=1) - timedelta(microseconds=1) if name.endswith(("lte]", "gt]")) else moment


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise errors.invalid(f"limit must be an integer between 1 and {MAX_PAGE_SIZE}", param="limit")
    return int(raw)


def _page_cursor(request: Request) -> int | None:
    raw = request.query_params.get("page")
    if raw is None:
        return None
    try:
        return int(base64.urlsafe_b64decode(raw.encode()).decode().removeprefix("before:"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise errors.invalid("page is not a valid page token", param="page") from None


async def list_events(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    """GET /v2/core/events: newest first; `limit`, `page`, `created[gt|gte|lt|lte]`, `types`, `object_id`."""
    limit = _limit(request)
    created = {op: _timestamp_param(request, f"created[{op}]") for op in ("gt", "gte", "lt", "lte")}
    types = frozenset(
        v for k, v in request.query_params.multi_items() if k == "types" or k.startswith("types[")
    )
    object_id = request.query_params.get("object_id")
    page, more = state.store.list_events(
        v2=True,
        before_seq=_page_cursor(request),
        limit=limit,
        created_gt=created["gt"],
        created_gte=created["gte"],
        created_lt=created["lt"],
        created_lte=created["lte"],
        types=types,
        object_id=object_id,
        context=call.context,
    )
    next_url = None
    if more and page:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
        token = base64.urlsafe_b64encode(f"before:{page[-1].seq}".encode()).decode()
        next_url = f"/v2/core/events?{urlencode([*kept, ('page', token)])}".replace("%5B", "[").replace(
            "%5D", "]"
        )
    return 200, {"data": [e.to_api() for e in page], "next_page_url": next_url, "previous_page_url": None}


async def retrieve_v1_event(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    event_id = request.path_params["id"]
    record = state.store.event(event_id)
    if record is None or record.is_v2:
        raise errors.not_found("event", event_id)
    return 200, record.to_api()


async def list_v1_events(request: Request, state: EmulatorState, call: Call) -> tuple[int, dict[str, Any]]:
    """GET /v1/events for the snapshot events: newest first; `limit`, `starting_after`, `type`, `types[]`,
    `created[gt|gte|lt|lte]` (unix seconds)."""
    limit = _limit(request)
    before = None
    if starting_after := request.query_params.get("starting_after"):
        anchor = state.store.event(starting_after)
        if anchor is None:
            raise errors.not_found("event", starting_after)
        before = anchor.seq
    types = {v for k, v in request.query_params.multi_items() if k == "type" or k.startswith("types[")}
    created = {op: _unix_param(request, f"created[{op}]") for op in ("gt", "gte", "lt", "lte")}
    page, more = state.store.list_events(
        v2=False,
        before_seq=before,
        limit=limit,
        types=frozenset(types),
        created_gt=created["gt"],
        created_gte=created["gte"],
        created_lt=created["lt"],
        created_lte=created["lte"],
    )
    data = [e.to_api() for e in page]
    return 200, {"object": "list", "url": "/v1/events", "has_more": more, "data": data}


def routes() -> list[Route]:
    return [
        Route("/v2/core/claimable_sandboxes", endpoint(create_sandbox), methods=["POST"]),
        Route("/v2/core/claimable_sandboxes/{id}", endpoint(retrieve_sandbox), methods=["GET"]),
        Route(
            "/v2/core/claimable_sandboxes/{id}/renew_onboarding_link", endpoint(renew_link), methods=["POST"]
        ),
        Route("/v2/core/events", endpoint(list_events), methods=["GET"]),
        Route("/v2/core/events/{id}", endpoint(retrieve_event), methods=["GET"]),
        Route("/v1/events", endpoint(list_v1_events, v2=False), methods=["GET"]),
        Route("/v1/events/{id}", endpoint(retrieve_v1_event, v2=False), methods=["GET"]),
    ]
