"""Webhook delivery like Stripe's: signed bodies, retries with backoff, and knobs for duplicates and order.

Each delivery of an event to an endpoint is a chain of attempts run by its own task. The body is fixed per
event; every attempt is signed afresh with the real time (`t=`), and while a secret is being rolled both
the new and the old secret sign it, as Stripe does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from processor.dev.emulator import ids
from processor.dev.emulator.clock import Clock, format_timestamp
from processor.dev.emulator.config import Knobs

logger = logging.getLogger(__name__)

#: attempts kept for inspection; older ones are forgotten first
MAX_ATTEMPTS_KEPT = 50_000


def sign(body: bytes, secrets: list[str], timestamp: int) -> str:
    """The `Stripe-Signature` header: `t=...` then one `v1=` HMAC-SHA256 of "{t}.{body}" per secret."""
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets]
    return ",".join(parts)


@dataclass(slots=True)
class Endpoint:
    """A webhook endpoint with its signing secret; `previous_secret` signs too until `previous_expires_at`."""

    id: str
    url: str
    secret: str = field(repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    previous_expires_at: datetime | None = None
    #: event types to send; empty = all
    enabled_events: frozenset[str] = frozenset()

    def signing_secrets(self, now: datetime) -> list[str]:
        secrets = [self.secret]
        if self.previous_secret and self.previous_expires_at and now < self.previous_expires_at:
            secrets.append(self.previous_secret)
        return secrets

    def wants(self, event_type: str) -> bool:
        return not self.enabled_events or event_type in self.enabled_events

    def to_api(self, *, with_secret: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "enabled_events": sorted(self.enabled_events),
            "rolling_until": format_timestamp(self.previous_expires_at) if self.previous_expires_at else None,
        }
        if with_secret:
            data["secret"] = self.secret
        return data


@dataclass(slots=True)
class Attempt:
    """One try at delivering one event to one endpoint, as the control API shows it."""

    id: int
    event_id: str
    event_type: str
    endpoint_id: str
    #: 1 for the first try of a chain, then counting retries
    attempt: int
    #: True when this chain is an injected duplicate
    duplicate: bool
    started_at: float
    outcome: str = "pending"  # pending | succeeded | failed | dropped
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    next_retry_in_s: float | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "endpoint_id": self.endpoint_id,
            "attempt": self.attempt,
            "duplicate": self.duplicate,
            "started_at": self.started_at,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "next_retry_in_s": self.next_retry_in_s,
        }


class Deliverer:
    """Sends events to endpoints in background tasks; `wait_idle()` returns once nothing is in flight."""

    def __init__(
        self,
        clock: Clock,
        knobs: Callable[[], Knobs],
        rng: random.Random,
        concurrency: int = 16,
    ) -> None:
        self._clock = clock
        self._knobs = knobs
        self._rng = rng
        self._endpoints: dict[str, Endpoint] = {}
        self._attempts: deque[Attempt] = deque(maxlen=MAX_ATTEMPTS_KEPT)
        self._next_attempt_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None

    # --- endpoints -----------------------------------------------------------------------------------
    def add_endpoint(
        self, url: str, secret: str | None = None, enabled_events: frozenset[str] = frozenset()
    ) -> Endpoint:
        endpoint = Endpoint(
            ids.endpoint_id(), url, secret or ids.webhook_secret(), enabled_events=enabled_events
        )
        self._endpoints[endpoint.id] = endpoint
        return endpoint

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return self._endpoints.get(endpoint_id)

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def remove_endpoint(self, endpoint_id: str) -> bool:
        return self._endpoints.pop(endpoint_id, None) is not None

    def roll_secret(self, endpoint_id: str, expires_in: timedelta, new_secret: str | None = None) -> Endpoint:
        """Give the endpoint a new secret; the old one keeps signing for `expires_in` (0 = stops at once)."""
        endpoint = self._endpoints[endpoint_id]
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_expires_at = self._clock.now() + expires_in
        endpoint.secret = new_secret or ids.webhook_secret()
        return endpoint

    # --- attempts ------------------------------------------------------------------------------------
    def attempts(self, *, event_id: str | None = None, endpoint_id: str | None = None) -> list[Attempt]:
        return [
            a
            for a in self._attempts
            if (event_id is None or a.event_id == event_id)
            and (endpoint_id is None or a.endpoint_id == endpoint_id)
        ]

    def _record(
        self, event_id: str, event_type: str, endpoint_id: str, attempt: int, duplicate: bool
    ) -> Attempt:
        record = Attempt(
            self._next_attempt_id, event_id, event_type, endpoint_id, attempt, duplicate, time.time()
        )
        self._next_attempt_id += 1
        self._attempts.append(record)
        return record

    # --- delivery ------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient()

    async def stop(self) -> None:
        """Cancel what is in flight and close the HTTP client; safe to call twice."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def wait_idle(self, within_s: float | None = None) -> None:
        """Wait until every scheduled delivery and its retries are done; TimeoutError after `within_s`."""
        await asyncio.wait_for(self._idle.wait(), within_s)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def publish(self, event_id: str, event_type: str, body: bytes) -> None:
        """Schedule delivery of one event to every endpoint that wants it (called when the event happens)."""
        knobs = self._knobs()
        for endpoint in self._endpoints.values():
            if not endpoint.wants(event_type):
                continue
            if not knobs.delivery_enabled:
                record = self._record(event_id, event_type, endpoint.id, 1, False)
                record.outcome, record.error = "dropped", "delivery is turned off"
                continue
            self._spawn(event_id, event_type, endpoint.id, body, duplicate=False)
            if knobs.duplicate_rate and self._rng.random() < knobs.duplicate_rate:
                self._spawn(event_id, event_type, endpoint.id, body, duplicate=True)

    def _spawn(
        self, event_id: str, event_type: str, endpoint_id: str, body: bytes, *, duplicate: bool
    ) -> None:
        knobs = self._knobs()
        delay = knobs.delivery_latency_s + (
            self._rng.uniform(0, knobs.reorder_window_s) if knobs.reorder_window_s else 0
        )
        task = asyncio.get_running_loop().create_task(
            self._chain(event_id, event_type, endpoint_id, body, delay, duplicate), name=f"deliver {event_id}"
        )
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("webhook delivery task crashed", exc_info=task.exception())
        if not self._tasks:
            self._idle.set()

    async def _chain(
        self, event_id: str, event_type: str, endpoint_id: str, body: bytes, delay: float, duplicate: bool
    ) -> None:
        attempt = 1
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            knobs = self._knobs()
            endpoint = self._endpoints.get(endpoint_id)
            record = self._record(event_id, event_type, endpoint_id, attempt, duplicate)
            if endpoint is None:
                record.outcome, record.error = "dropped", "endpoint was removed"
                return
            if not knobs.delivery_enabled:
                record.outcome, record.error = "dropped", "delivery is turned off"
                return
            if await self._send(endpoint, body, record, knobs.delivery_timeout_s):
                return
            if attempt >= knobs.max_attempts:
                return
            # exponential backoff with jitter, like Stripe's retry schedule but compressed for development
            delay = min(knobs.retry_max_s, knobs.retry_base_s * 2 ** (attempt - 1)) * self._rng.uniform(
                0.8, 1.2
            )
            record.next_retry_in_s = round(delay, 3)
            attempt += 1

    async def _send(self, endpoint: Endpoint, body: bytes, record: Attempt, limit_s: float) -> bool:
        assert self._client is not None, "Deliverer.start() was not called"
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(body, endpoint.signing_secrets(self._clock.now()), int(time.time())),
        }
        started = time.monotonic()
        async with self._semaphore:
            try:
                response = await self._client.post(
                    endpoint.url, content=body, headers=headers, timeout=limit_s
                )
            except httpx.TimeoutException:
                record.outcome, record.error = "failed", "timeout"
                return False
            except httpx.HTTPError as exc:
                record.outcome, record.error = "failed", f"{type(exc).__name__}: {exc}"
                return False
            finally:
                record.duration_ms = round((time.monotonic() - started) * 1000, 1)
        record.status_code = response.status_code
        record.outcome = "succeeded" if 200 <= response.status_code < 300 else "failed"
        return record.outcome == "succeeded"
