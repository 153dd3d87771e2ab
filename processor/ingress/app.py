"""The webhook front door: verify a Stripe delivery, make it durable in the event log, then answer.

Answers (ARCHITECTURE §4): 200 only after `log.publish` returned; 400 for a missing, malformed or
non-matching signature, a timestamp outside the tolerance (past or future), a body that is not a JSON event;
408 when the body does not arrive within the read deadline (a slow-loris client holds no worker for long;
Stripe treats 408 like any failure and retries); 413 over the body limit; 503 with Retry-After when the log
is unavailable or too slow, or when the bodies being read at once already hold their memory budget.
Error bodies are `{"error": "<reason code>"}` and never echo input or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from processor import constants as c
from processor.errors import ConfigError, LogUnavailable, SignatureError
from processor.eventlog.base import EventLog
from processor.ingress.envelope import Envelope, EnvelopeError, parse_envelope
from processor.ingress.logholder import hold_event_log
from processor.ingress.metrics import IngressMetrics
from processor.ingress.signature import Verifier, parse_header
from processor.runtime import logs
from processor.settings import Settings
from processor.timestamps import rfc3339

WEBHOOK_PATH = "/webhooks/stripe"

#: a whole body must arrive within this many seconds; Stripe sends a few KiB at once
DEFAULT_BODY_TIMEOUT_S = c.DEFAULT_BODY_TIMEOUT_S

ACCEPTED = "accepted"
TOO_LARGE = "body_too_large"
BODY_TIMEOUT = "body_timeout"
BAD_LENGTH = "invalid_content_length"
DISCONNECTED = "client_disconnected"
PUBLISH_TIMEOUT = "publish_timeout"
LOG_UNAVAILABLE = "log_unavailable"
BODIES_BUSY = "too_many_bodies_in_flight"
DUPLICATE_SIGNATURE = "duplicate_signature"

_logger = logging.getLogger("processor.ingress")
_JSON = "application/json"


class _Rejected(Exception):
    """Ends a delivery early with `status` and reason `code`."""

    def __init__(self, status: int, code: str, *, close: bool = False) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        # for a client too slow to finish its body; after a 413 uvicorn discards the rest of the body
        # without buffering it, so the client still reads its answer instead of a connection reset
        self.close = close


class _Answer(NamedTuple):
    """A whole answer as the two ASGI messages that send it, built once and sent as often as needed (uvicorn
    only reads them), instead of a Starlette Response rendering its headers on every delivery."""

    status: int
    start: dict[str, object]
    body: dict[str, object]


def _answer(status: int, payload: bytes, *, close: bool = False) -> _Answer:
    headers = [(b"content-type", _JSON.encode()), (b"content-length", b"%d" % len(payload))]
    if close:
        headers.append((b"connection", b"close"))
    if status == 503:
        headers.append((b"retry-after", str(c.RETRY_AFTER_SECONDS).encode()))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return _Answer(status, start, {"type": "http.response.body", "body": payload})


@functools.lru_cache(maxsize=128)
def _error(status: int, code: str, *, close: bool = False) -> _Answer:
    return _answer(status, b'{"error":"%s"}' % code.encode(), close=close)


_ACCEPTED = _answer(200, b'{"received":true}')



def _record_headers(envelope: Envelope, secret_index: int) -> list[tuple[str, bytes]]:
    """The headers of a delivery's record (ARCHITECTURE §4): what consumers route and audit by, unparsed."""
    return [
        (c.H_EVENT_ID, envelope.id.encode()),
        (c.H_EVENT_TYPE, envelope.type.encode()),
        (c.H_OBJECT, envelope.object.encode()),
        (c.H_RECEIVED_AT, rfc3339(datetime.now(UTC)).encode()),
        (c.H_SECRET_INDEX, b"%d" % secret_index),
    ]


async def _receive_by(receive: Receive, deadline: float) -> Message:
    """The next ASGI message, or 408 if it has not come by `deadline` (event loop time): a slow-loris body holds
    no task for long. Cancels only this delivery's task; a server shutdown's cancellation still propagates."""
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        raise _Rejected(408, BODY_TIMEOUT, close=True) from None


def _signature_and_length(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bytes | None]:
    """`Stripe-Signature` and `Content-Length` from the request's headers (lower-cased by the server), in one
    pass; a second Stripe-Signature is refused, as a bad one would be: which one counts would be a guess."""
    signature = declared = None
    for name, value in headers:
        if name == b"stripe-signature":
            if signature is not None:
                raise _Rejected(400, DUPLICATE_SIGNATURE)
            signature = value.decode("latin-1")
        elif name == b"content-length":
            declared = value
    return signature, declared


class Ingress:
    """The request handlers of one app, bound to its settings, log and metrics."""

    def __init__(self, settings: Settings, log: EventLog | None, body_timeout_s: float) -> None:
        self.settings = settings
        self.log = log
        self.topic = settings.topic(c.TOPIC_EVENTS)
        self.verifier = Verifier([s.reveal() for s in settings.stripe_webhook_secrets], settings.signature_tolerance_s)
        self.metrics = IngressMetrics()
        self.body_timeout_s = body_timeout_s
        #: bytes held by the bodies being read right now, across all connections
        self.bytes_in_flight = 0

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        """The body, refusing more than the limit while reading, and 408 if it takes too long.

        The first piece is awaited without a timer of our own: a delivery's body comes with its head, so it is
        there already, and a client that sends no body at all is cut off by the HTTP server's body deadline
        (HttpLimits.body_timeout_s, the same length). Only a body in several pieces is read under a deadline:
        a timer per delivery was a sizeable share of the ingress's CPU time (bench/ingress_app.py)."""
        limit = self.settings.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise _Rejected(400, BAD_LENGTH, close=True)
            # compared as text first: int() refuses more than 4,300 digits, and leading zeros are valid
            digits = declared.lstrip(b"0")
            if len(digits) > len(str(limit)) or int(digits or b"0") > limit:
                raise _Rejected(413, TOO_LARGE)
        chunks: list[bytes] = []
        size = 0
        deadline = None
        try:
            message = await receive()
            while True:
                if message["type"] != "http.request":  # http.disconnect
                    raise _Rejected(400, DISCONNECTED, close=True)
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:  # chunked or lying about its length
                    raise _Rejected(413, TOO_LARGE)
                self._hold(len(chunk))
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + self.body_timeout_s
                message = await _receive_by(receive, deadline)
        finally:
            self.bytes_in_flight -= sum(map(len, chunks))

    async def _publish(self, log: EventLog, envelope: Envelope, body: bytes, secret_index: int) -> None:
        """Make the delivery durable in `log` within publish_timeout_s, or refuse it with 503 (Stripe retries;
        nothing is acknowledged)."""
        # cancels only this delivery's task and turns that into TimeoutError; a shutdown's cancellation propagates
        deadline = asyncio.timeout(self.settings.publish_timeout_s)
        try:
            async with deadline:
                await log.publish(self.topic, envelope.key.encode(), body, _record_headers(envelope, secret_index))
        except LogUnavailable:
            raise _Rejected(503, LOG_UNAVAILABLE) from None
        except Exception as exc:  # any producer failure, a TimeoutError of its own included
            if deadline.expired():
                raise _Rejected(503, PUBLISH_TIMEOUT) from None
            fields = {"event_id": envelope.id, "error": type(exc).__name__}
            _logger.error("publish failed", extra={"fields": fields})
            raise _Rejected(503, LOG_UNAVAILABLE) from exc

    def _hold(self, size: int) -> None:
        """Count `size` more body bytes in memory, or refuse the delivery if the budget would be exceeded."""
        if self.bytes_in_flight + size > self.settings.max_body_bytes_in_flight:
            raise _Rejected(503, BODIES_BUSY, close=True)
        self.bytes_in_flight += size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /webhooks/stripe, as a plain ASGI app without a Request and a Response wrapped around every
        delivery (bench/ingress.py: about a fifth more deliveries per second). IngressApp calls it; its route
        stays in the router so that other methods on the path get 405."""
        started = time.perf_counter()
        event_id = event_type = None
        size = 0
        try:
            signature, declared = _signature_and_length(scope["headers"])
            # the header first: a request without a usable signature costs no body read
            header = parse_header(signature)
            body = await self._read_body(receive, declared)
            size = len(body)
            secret_index = self.verifier.verify(body, header)
            envelope = parse_envelope(body)
            event_id, event_type = envelope.id, envelope.type
            log = self.log
            if log is None:
                raise _Rejected(503, LOG_UNAVAILABLE)
            await self._publish(log, envelope, body, secret_index)
        except (SignatureError, EnvelopeError) as exc:
            outcome, response = exc.code, _error(400, exc.code)
        except _Rejected as exc:
            outcome, response = exc.code, _error(exc.status, exc.code, close=exc.close)
        else:
            outcome, response = ACCEPTED, _ACCEPTED
        self._record(outcome, response.status, event_id, event_type, size, time.perf_counter() - started)
        await send(response.start)
        await send(response.body)

    def _record(self, outcome: str, status: int, event_id: str | None, event_type: str | None, size: int,
                elapsed: float) -> None:
        """Count the answered delivery in the metrics and write its access-log line."""
        self.metrics.observe(outcome, event_type, elapsed, size)
        fields: dict[str, object] = {
            "event_id": event_id,
            "event_type": event_type,
            "outcome": outcome,
            "status": status,
            "bytes": size,
            "ms": int(elapsed * 1_000_000) / 1000,  # to the microsecond, without round(x, 3)'s decimal detour
        }
        level = logging.INFO if outcome == ACCEPTED else logging.WARNING
        _logger.log(level, "webhook delivery", extra={"fields": fields})

    def attach_log(self, log: EventLog | None) -> None:
        """Publish to `log` from now on (None: answer 503 until one is attached)."""
        self.log = log

    async def healthz(self, request: Request) -> Response:
        """Process alive."""
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        """Ready while the log producer is connected."""
        if self.log is not None and self.log.healthy():
            return Response(b'{"status":"ready"}', media_type=_JSON)
        return Response(b'{"status":"unavailable"}', 503, {"Retry-After": str(c.RETRY_AFTER_SECONDS)}, _JSON)

    async def metrics_endpoint(self, request: Request) -> Response:
        """Prometheus text exposition."""
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


class IngressApp(Starlette):
    """The ingress's Starlette app, which hands `POST /webhooks/stripe` straight to the ingress; every other
    request (and the webhook path with another method, which gets 405) goes through Starlette as usual.

    Starlette's per-request machinery (two middlewares, an exception-handling wrapper with its own Request,
    regex matching of each route) cost as much CPU as verifying, parsing and publishing a delivery together.
    An unexpected error in the ingress still gets a 500: uvicorn answers it and logs the traceback, as
    Starlette's ServerErrorMiddleware would have.
    """

    def __init__(self, ingress: Ingress, **options: Any) -> None:
        super().__init__(**options)
        self.ingress = ingress
        self.state.ingress = ingress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH and scope["method"] == "POST":
            await self.ingress(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def build_app(
    settings: Settings, log: EventLog | None = None, *, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
) -> Starlette:
    """The ingress app. With `log` the caller owns it; without, the lifespan opens one from settings."""
    if not settings.stripe_webhook_secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS", "the ingress needs at least one webhook signing secret")
    ingress = Ingress(settings, log, body_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if log is not None:
                yield
                return
            # 503 and /readyz red until the log opens; leaving (after uvicorn finished in-flight requests) flushes
            # and stops the producer
            stop = asyncio.Event()
            holder = asyncio.create_task(hold_event_log(settings, ingress.attach_log, stop), name="event-log")
            try:
                yield
            finally:
                stop.set()
                await holder
        finally:
            logs.drain()  # the access-log lines of the last deliveries, before the process ends

    routes = [
        Route(WEBHOOK_PATH, ingress, methods=["POST"]),
        Route("/healthz", ingress.healthz, methods=["GET"]),
        Route("/readyz", ingress.readyz, methods=["GET"]),
    ]
    if settings.metrics_port is None:  # else served on its own port by whoever runs the app
        routes.append(metrics_route(ingress))
    return IngressApp(ingress, routes=routes, lifespan=lifespan)


def metrics_route(ingress: Ingress) -> Route:
    """GET /metrics of `ingress`, for the public app or an app of its own on PROCESSOR_METRICS_PORT."""
    return Route("/metrics", ingress.metrics_endpoint, methods=["GET"])
