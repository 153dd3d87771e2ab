"""Calls to Stripe through the official SDK: the preview v2 claimable-sandbox and event endpoints.

The SDK's `StripeClient` does the requests, over its aiohttp transport with one shared keep-alive connection
pool (so no blocking I/O on the event loop); this module adds what the processor needs around it: the preview
`Stripe-Version`, an overridable API base (the emulator), the key's rate budget (`stripe_api.budget`: one per
key across every process, with priorities; a 429 of the rate limit slows it for everyone), retries with
exponential backoff and jitter on 429/5xx that honour `Stripe-Should-Retry`, and errors mapped to
`StripeError(status, retriable)`. The API key lives only in this object's `Secret` and inside the SDK client;
it is never logged and never part of a repr.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import stripe

from processor.backoff import backoff_delay
from processor.constants import STRIPE_API_VERSION
from processor.errors import ConfigError, StripeError
from processor.settings import Settings
from processor.stripe_api.budget import Budget, BudgetPlan, LocalBudget, Priority
from processor.stripe_api.redaction import install as install_redaction

log = logging.getLogger(__name__)

#: statuses worth retrying when Stripe does not say otherwise (rate limited, lock timeout, server errors)
RETRIABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BASE_DELAY_S = 0.2
DEFAULT_MAX_DELAY_S = 5.0
#: one request; the SDK's default (80 s) would stall a consumer batch far too long
DEFAULT_TIMEOUT_S = 15.0
#: HTTP connections kept open to Stripe (the consumer has up to this many fetches in flight)
DEFAULT_MAX_CONNECTIONS = 256


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _classify(exc: stripe.StripeError) -> StripeError:
    """Map an SDK error to ours: retriable follows `Stripe-Should-Retry` first, then the status."""
    status = exc.http_status
    should_retry = _header(exc.headers, "Stripe-Should-Retry")
    if isinstance(exc, stripe.APIConnectionError):
        retriable = True if should_retry is None else should_retry == "true"
    elif should_retry is not None:
        retriable = should_retry == "true"
    else:
        retriable = status in RETRIABLE_STATUSES
    code = getattr(exc, "code", None)
    # the SDK's message carries no credentials (Stripe masks keys in its own error text)
    message = f"Stripe {status or 'connection'} {code or type(exc).__name__}: {exc.user_message or exc}"
    return StripeError(message, status=status, retriable=retriable)


def _rate_limited(exc: stripe.StripeError) -> bool:
    """A 429 of the key's rate limit (not `lock_timeout`: contention on one object, which a slower key
    would not cure)."""
    return exc.http_status == 429 and getattr(exc, "code", None) != "lock_timeout"


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON object Stripe answered, and when on Stripe's clock (its `Date` header; None without one)."""

    data: dict[str, Any]
    at: datetime | None


def answer_time(headers: Mapping[str, str] | None) -> datetime | None:
    """The `Date` of an answer as an aware datetime; None when it is missing or not an HTTP date."""
    raw = _header(headers, "Date")
    if raw is None:
        return None
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    # an HTTP date is GMT; one without a zone (an old obsolete format) means GMT too
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _AioHttpTransport(stripe.AIOHTTPClient):
    """The SDK's aiohttp transport, turning an error answer whose body is not a Stripe error into an APIError.

    A proxy in front of Stripe, or a server at its connection limit, may answer `{"error": "some_code"}`; the
    SDK reads a string `error` as an OAuth error and, for v2 paths, then fails with an AttributeError instead of
    raising a StripeError, so the call was neither classified by its status nor retried."""

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        content, status, response_headers = await super().request_async(method, url, headers, post_data)
        if status >= 400 and not _is_stripe_error(content):
            raise stripe.APIError(
                f"HTTP {status} with a body that is not a Stripe error", http_body=content, http_status=status,
                headers=dict(response_headers),
            )
        return content, status, response_headers


def _is_stripe_error(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)


class StripeApi:
    """The processor's Stripe client. `async with StripeApi(settings) as api: await api.retrieve_sandbox(...)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        base_delay_s: float = DEFAULT_BASE_DELAY_S,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_response: Callable[[str], None] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        budget: Budget | None = None,
        priority: Priority = Priority.CONSUMER,
    ) -> None:
        """`budget` is the key's shared budget (default: one in this process alone); `priority` is what calls
        that name none draw at (creating a sandbox and renewing a link are always user-facing)."""
        if settings.stripe_api_key is None:
            raise ConfigError("STRIPE_API_KEY", "the processor needs a Stripe API key to fetch sandboxes")
        install_redaction()  # create responses carry a sandbox's secret keys; the SDK logs bodies at DEBUG
        # The SDK's opt-out request telemetry (the previous request's client-side latency, sent to Stripe in a
        # header) costs ~90 us of CPU per request here, a third of what a fetch costs the client (measured at
        # 64 in flight): the consumer's fetch rate is bound by that CPU. A process-wide SDK setting.
        stripe.enable_telemetry = False
        self.api_base = settings.stripe_api_base
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.budget = budget or LocalBudget(BudgetPlan.from_settings(settings))
        self.priority = priority
        #: called with the status of every response ("200", "429", "error" for no response): a metric hook
        self.on_response = on_response
        self._api_key = settings.stripe_api_key
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        #: built on first use: aiohttp's session and connector belong to the running event loop
        self._client: stripe.StripeClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _refuse_if_closed(self) -> None:
        # a call racing shutdown would otherwise open a session that nobody closes (and spend a token first)
        if self._closed:
            raise StripeError("the Stripe client is closed (shutting down)", retriable=True)

    def _sdk(self) -> stripe.StripeClient:
        """The SDK client, created on first use inside the event loop."""
        self._refuse_if_closed()  # again: close() may have run while the call waited for its token
        if self._client is None:
            # The SDK's HTTPX transport costs 1.6-3 ms of CPU per request with 32-256 requests in flight (httpx's
            # pool bookkeeping grows with the number of connections); its aiohttp transport costs about 0.25 ms,
            # SDK included (measured against a fixed-answer local server). The fetch rate of the consumer is
            # bound by that CPU, so the SDK talks through aiohttp, with every connection kept alive.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=ssl.create_default_context(cafile=stripe.ca_bundle_path), limit=self._max_connections
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # an API client has no use for cookies
            )
            self._client = stripe.StripeClient(
                self._api_key.reveal(),
                stripe_version=STRIPE_API_VERSION,
                base_addresses={"api": self.api_base},
                max_network_retries=0,  # retries are ours: rate-limited, jittered, and they honour Should-Retry
                http_client=_AioHttpTransport(
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s), session=self._session
                ),
            )
        return self._client

    def __repr__(self) -> str:
        return f"StripeApi(api_base={self.api_base!r})"

    async def close(self) -> None:
        """Close the HTTP connections; later calls fail (retriable). Safe to call twice."""
        self._closed = True
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> StripeApi:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- endpoints ---------------------------------------------------------------------------------------
    async def retrieve_sandbox(
        self, sandbox_id: str, context: str | None = None, *, priority: Priority | None = None
    ) -> dict[str, Any]:
        """GET /v2/core/claimable_sandboxes/{id}, as the account `context` (the event's) sees it."""
        return (await self.fetch_sandbox(sandbox_id, context, priority=priority)).data

    async def fetch_sandbox(
        self, sandbox_id: str, context: str | None = None, *, priority: Priority | None = None
    ) -> Answer:
        """`retrieve_sandbox`, with the time of Stripe's answer: the consumer knows which events it shows."""
        path = f"/v2/core/claimable_sandboxes/{quote(sandbox_id, safe='')}"
        return await self.answer("get", path, context=context, priority=priority)

    async def create_sandbox(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """POST /v2/core/claimable_sandboxes; the caller's deterministic key makes a retry create nothing new."""
        return await self.request(
            "post", "/v2/core/claimable_sandboxes", params=params, idempotency_key=idempotency_key,
            priority=Priority.USER,
        )  # fmt: skip

    async def renew_onboarding_link(
        self, sandbox_id: str, params: Mapping[str, Any], *, idempotency_key: str, context: str | None = None
    ) -> dict[str, Any]:
        """POST /v2/core/claimable_sandboxes/{id}/renew_onboarding_link."""
        path = f"/v2/core/claimable_sandboxes/{quote(sandbox_id, safe='')}/renew_onboarding_link"
        return await self.request(
            "post", path, params=params, idempotency_key=idempotency_key, context=context, priority=Priority.USER
        )

    async def list_events(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        context: str | None = None,
        page_url: str | None = None,
        priority: Priority | None = None,
    ) -> dict[str, Any]:
        """GET /v2/core/events (one page; follow `next_page_url` by passing it as `page_url`)."""
        return await self.request(
            "get", page_url or "/v2/core/events", params=params, context=context, priority=priority
        )

    async def list_v1_events(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """GET /v1/events (one page; the next starts after the last id while `has_more`)."""
        return await self.request("get", "/v1/events", params=params)

    async def retrieve_event(self, event_id: str, *, context: str | None = None) -> dict[str, Any]:
        """GET /v2/core/events/{id}."""
        return await self.request("get", f"/v2/core/events/{quote(event_id, safe='')}", context=context)

    # --- the retried, rate-limited call --------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        context: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
    ) -> dict[str, Any]:
        """One API call within the key's budget, with retries; raises StripeError (retriable when worth retrying
        later). Every attempt draws from the budget at `priority` (default: this client's)."""
        return (
            await self.answer(
                method, path, params=params, context=context, idempotency_key=idempotency_key, priority=priority
            )
        ).data

    async def answer(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        context: str | None = None,
        idempotency_key: str | None = None,
        priority: Priority | None = None,
    ) -> Answer:
        """`request`, with the time of the answer on Stripe's clock."""
        if method == "post" and idempotency_key is None:
            # the SDK would make up a random key, so a retry after a lost answer could create twice
            raise ValueError("POSTs to Stripe need a deterministic idempotency key")
        options: dict[str, Any] = {}
        if context:
            options["stripe_context"] = context
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        priority = self.priority if priority is None else priority
        attempt = 0
        while True:
            attempt += 1
            self._refuse_if_closed()
            await self.budget.acquire(priority)
            try:
                response = await self._sdk().raw_request_async(method, path, **options, **dict(params or {}))
            except stripe.StripeError as exc:
                self._observe(str(exc.http_status) if exc.http_status else "error")
                error = _classify(exc)
                raw_retry_after = _header(exc.headers, "Retry-After")
                retry_after = float(raw_retry_after) if raw_retry_after and raw_retry_after.isdigit() else None
                if _rate_limited(exc):  # the key's budget is too generous right now: every caller slows down
                    await self.budget.throttled(retry_after)
                if not error.retriable or attempt >= self.max_attempts:
                    raise error from exc
                delay = backoff_delay(attempt, self.base_delay_s, self.max_delay_s, retry_after)
                log.info("retrying Stripe %s %s in %.2fs after %s", method.upper(), path, delay, error)
                await asyncio.sleep(delay)
                continue
            self._observe(str(response.code))
            data = response.data
            if not isinstance(data, dict):
                raise StripeError(f"Stripe answered {path} with a non-object", status=response.code)
            return Answer(data, answer_time(response.headers))

    def _observe(self, status: str) -> None:
        if self.on_response is not None:
            self.on_response(status)
