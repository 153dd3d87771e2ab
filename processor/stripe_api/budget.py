"""One rate budget per Stripe API key, shared by every process and caller that uses the key (ARCHITECTURE §8).

Stripe limits a key, not a process: 25 requests/s in sandbox mode, 100 live, for everything the platform does
with it. So the budget is a token bucket per key whose level lives in PostgreSQL (`SharedBudget`, migration
0007), which every replica already reaches: taking a token is one call of `stripe_budget_take` (several calls
share a round trip, below). `PROCESSOR_STRIPE_MAX_RPS` is the key's limit; the bucket refills at that limit
less the headroom left to the platform's other calls, and holds the headroom's worth (3 tokens at least), so
that in any second the key spends at most its limit.

Priorities are reserves in that bucket: a user-facing call (create a sandbox, renew an onboarding link) takes
any token; a consumer fetch leaves the last token to users; reconcile and replay take one only from a full
bucket, that is, what nobody else wanted. Each process lets one waiter per priority ask at a time (the others
queue behind it in order), and that one asks for the waiters queued behind it too (up to `MAX_TOKENS_PER_ASK`
tokens in the one round trip; each token is still taken by one call of `stripe_budget_take`, so the reserves
hold token by token): a thousand fetches in flight cost a few dozen queries, not a thousand.

A 429 that gets through anyway (another client of the key, a smaller limit than configured) slows the whole
budget for every process: no token for Retry-After (1 s if Stripe gives none), and half the rate, climbing
back over `RECOVERY_S`. `LocalBudget` is the same bucket in one process's memory, for a process that has no
database (and the fallback while PostgreSQL does not answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from processor.db.pool import DATABASE_ERRORS
from processor.settings import Secret, Settings
from processor.tokenbucket import TokenBuckets

log = logging.getLogger(__name__)

#: a 429 without Retry-After pauses the budget this long (Stripe's own advice: back off about a second)
DEFAULT_PAUSE_S = 1.0
#: after a 429 the rate is halved, never below this share of it, and climbs back to all of it over RECOVERY_S
MIN_FACTOR = 0.1
RECOVERY_S = 30.0
#: a waiter asks again at least this often (a pause can end sooner than the wait it was told)
MAX_SLEEP_S = 2.0
#: most tokens one ask takes for the waiters of a priority queued in this process. A round trip per token cost a
#: consumer fetch about as much CPU as the rest of its request (bench/lifecycle.py, py-spy), with the pool's reset
#: of the connection on each release
MAX_TOKENS_PER_ASK = 32
#: how often a budget that lost PostgreSQL says so in the log
FALLBACK_WARN_EVERY_S = 60.0
_LOCAL_KEY = "stripe"


class Priority(IntEnum):
    """Who waits for the call: lower is served first."""

    #: a person waits: create a sandbox, renew an onboarding link
    USER = 0
    #: fetches that settle webhook events (lag, not a person)
    CONSUMER = 1
    #: reconcile and replay from Stripe: whatever is left
    BACKGROUND = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """The bucket of one key: refill rate, size, and each priority's reserve."""

    limit_rps: float
    headroom: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> BudgetPlan:
        return cls(settings.stripe_max_rps, settings.stripe_headroom)

    @property
    def capacity(self) -> float:
        # 3 is the least that gives each priority a level of its own (user >= 1, consumer >= 2, background 3)
        return max(3.0, self.limit_rps * self.headroom)

    @property
    def rate(self) -> float:
        # rate + capacity is the most one second can see: keep it within the limit (unless the limit is so
        # small that this would leave less than half of it)
        return max(self.limit_rps / 2, min(self.limit_rps * (1 - self.headroom), self.limit_rps - self.capacity))

    def reserve(self, priority: Priority) -> float:
        if priority is Priority.USER:
            return 0.0
        if priority is Priority.CONSUMER:
            return 1.0
        return self.capacity - 1  # background: only from a full bucket


def budget_key(api_key: Secret) -> str:
    """The budget's name for an API key: a hash prefix (the key itself is never stored)."""
    return "sha256:" + hashlib.sha256(api_key.reveal().encode()).hexdigest()[:16]


class BudgetMetrics:
    """Budget metrics in `registry`: tokens taken and waiters by priority, waits, 429s, database round trips."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.taken = Counter(
            "processor_stripe_budget_requests_total",
            "Stripe requests let through by the shared rate budget, by priority (user, consumer, background).",
            ["priority"],
            registry=registry,
        )
        self.waiting = Gauge(
            "processor_stripe_budget_waiting",
            "Callers of this process waiting for the Stripe rate budget, by priority.",
            ["priority"],
            registry=registry,
        )
        self.wait = Histogram(
            "processor_stripe_budget_wait_seconds",
            "Time a Stripe request waited for the rate budget, by priority.",
            ["priority"],
            buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0),
            registry=registry,
        )
        self.throttled = Counter(
            "processor_stripe_throttled_total",
            "Stripe 429s of the rate limit met despite the budget (each slows the whole budget down).",
            registry=registry,
        )
        self.round_trips = Counter(
            "processor_stripe_budget_round_trips_total",
            "Queries to PostgreSQL the shared budget made (what the budget costs per request).",
            registry=registry,
        )
        self.tokens = Gauge(
            "processor_stripe_budget_tokens",
            "Tokens in the key's shared budget now (negative while paused after a 429).",
            registry=registry,
        )
        self.rate = Gauge(
            "processor_stripe_budget_rate",
            "Requests per second the key's shared budget lets through now (less after a 429).",
            registry=registry,
        )
        self.is_throttled = Gauge(
            "processor_stripe_budget_throttled",
            "1 while the key's shared budget is paused or slowed after a 429, else 0.",
            registry=registry,
        )

    def show(self, level: BudgetLevel) -> None:
        """Set the level gauges to what `read_budget` read."""
        self.tokens.set(level.tokens)
        self.rate.set(level.rate)
        self.is_throttled.set(1 if level.throttled else 0)


class Budget:
    """Take a token before each Stripe request: `await budget.acquire(Priority.CONSUMER)`."""

    def __init__(self, plan: BudgetPlan, metrics: BudgetMetrics | None = None) -> None:
        self.plan = plan
        self.metrics = metrics
        self._turns = {priority: asyncio.Lock() for priority in Priority}
        #: callers of `acquire` per priority, the one asking included
        self._queued = dict.fromkeys(Priority, 0)
        #: tokens an ask took for the waiters queued behind it, not handed out yet
        self._spare = dict.fromkeys(Priority, 0)

    async def acquire(self, priority: Priority) -> None:
        """Wait until the budget lets one request of `priority` through."""
        started = time.monotonic()
        self._queued[priority] += 1
        try:
            async with self._waiting(priority), self._turns[priority]:  # FIFO per priority
                await self._turn(priority)
        finally:
            self._queued[priority] -= 1
        if self.metrics is not None:
            self.metrics.taken.labels(priority=priority.label).inc()
            self.metrics.wait.labels(priority=priority.label).observe(time.monotonic() - started)

    async def _turn(self, priority: Priority) -> None:
        """The token of the waiter whose turn it is: one the previous ask took for it, or a new ask."""
        if self._spare[priority]:
            self._spare[priority] -= 1
            return
        # polling on purpose: the token comes from other processes' clocks, not an event in this one
        while True:
            taken, wait = await self._take(priority, min(self._queued[priority], MAX_TOKENS_PER_ASK))
            if taken:
                self._spare[priority] += taken - 1
                return
            await asyncio.sleep(min(wait, MAX_SLEEP_S))

    async def throttled(self, retry_after_s: float | None) -> None:
        """Stripe answered 429 for the rate limit: pause and slow the budget for everyone."""
        pause = retry_after_s if retry_after_s and retry_after_s > 0 else DEFAULT_PAUSE_S
        if self.metrics is not None:
            self.metrics.throttled.inc()
        # the key is over its limit: tokens taken ahead for waiters here would not wait for the pause
        self._spare = dict.fromkeys(Priority, 0)
        await self._throttle(pause)

    @contextlib.asynccontextmanager
    async def _waiting(self, priority: Priority) -> AsyncIterator[None]:
        if self.metrics is None:
            yield
            return
        gauge = self.metrics.waiting.labels(priority=priority.label)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    async def _take(self, priority: Priority, wanted: int) -> tuple[int, float]:
        """Take up to `wanted` tokens at `priority`: how many were taken, and when none was, how long to wait."""
        raise NotImplementedError

    async def _throttle(self, pause_s: float) -> None:
        raise NotImplementedError


class LocalBudget(Budget):
    """The budget in this process's memory: right for one process, and for tests without a database."""

    def __init__(self, plan: BudgetPlan, metrics: BudgetMetrics | None = None) -> None:
        super().__init__(plan, metrics)
        self._bucket = TokenBuckets(plan.capacity, plan.rate)

    async def _take(self, priority: Priority, wanted: int) -> tuple[int, float]:
        taken = 0
        while taken < wanted and (wait := self._bucket.take(_LOCAL_KEY, self.plan.reserve(priority))) <= 0:
            taken += 1
        return (taken, 0.0) if taken else (0, wait)

    async def _throttle(self, pause_s: float) -> None:
        self._bucket.drain(_LOCAL_KEY, pause_s)


class SharedBudget(Budget):
    """The budget of key `key` in PostgreSQL, shared with every process that uses the same database and key."""

    def __init__(self, pool: asyncpg.Pool, key: str, plan: BudgetPlan, metrics: BudgetMetrics | None = None) -> None:
        super().__init__(plan, metrics)
        self.pool = pool
        self.key = key
        # While PostgreSQL does not answer, this process goes on alone at the whole rate: Stripe calls are
        # rare then anyway (the consumer and the API need the database too), and a 429 still slows it.
        self._fallback = LocalBudget(plan)
        self._warned_at = -FALLBACK_WARN_EVERY_S

    async def _take(self, priority: Priority, wanted: int) -> tuple[int, float]:
        plan = self.plan
        try:
            if self.metrics is not None:
                self.metrics.round_trips.inc()
            # one call of the function per token, in one statement: each call sees the tokens the previous took
            waits = [
                float(row[0])
                for row in await self.pool.fetch(
                    "SELECT stripe_budget_take($1, $2, $3, $4, $5) FROM generate_series(1, $6)",
                    self.key, plan.rate, plan.capacity, plan.reserve(priority), RECOVERY_S, wanted,
                )
            ]  # fmt: skip
        except DATABASE_ERRORS as exc:
            self._lost(exc)
            return await self._fallback._take(priority, wanted)
        taken = sum(1 for wait in waits if wait <= 0)
        return (taken, 0.0) if taken else (0, min(waits))

    async def _throttle(self, pause_s: float) -> None:
        plan = self.plan
        try:
            factor = await self._query(
                "SELECT stripe_budget_throttle($1, $2, $3, $4, $5, $6)",
                self.key, plan.rate, plan.capacity, pause_s, MIN_FACTOR, RECOVERY_S,
            )  # fmt: skip
        except DATABASE_ERRORS as exc:
            self._lost(exc)
            await self._fallback._throttle(pause_s)
            return
        log.warning("Stripe rate-limited key %s: budget paused %.1fs, rate now %.0f%%", self.key, pause_s,
                    100 * factor)  # fmt: skip

    async def _query(self, sql: str, *args: object) -> float:
        if self.metrics is not None:
            self.metrics.round_trips.inc()
        return float(await self.pool.fetchval(sql, *args))

    def _lost(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= FALLBACK_WARN_EVERY_S:
            self._warned_at = now
            log.warning("Stripe budget in PostgreSQL unavailable, this process limits itself alone: %s", exc)


@dataclass(frozen=True, slots=True)
class BudgetLevel:
    """The key's shared budget as every process sees it now (what the metrics and the console show)."""

    limit_rps: float
    capacity: float
    #: tokens now, refill included: below 0 while a 429's pause lasts
    tokens: float
    #: requests per second let through now: the plan's rate, times the slow factor after a 429
    rate: float
    #: 1.0, or less while the rate climbs back after a 429
    slow_factor: float

    @property
    def paused_s(self) -> float:
        """Seconds until the next token after a 429's pause (0 when not paused)."""
        return max(0.0, -self.tokens / self.rate)

    @property
    def throttled(self) -> bool:
        return self.slow_factor < 1.0 or self.tokens < 0


async def read_budget(settings: Settings, pool: asyncpg.Pool) -> BudgetLevel | None:
    """The level of the configured key's shared budget, read without taking a token (None: no API key). A key
    nobody used yet has a full bucket, as `stripe_budget_take` would create it."""
    if settings.stripe_api_key is None:
        return None
    plan = BudgetPlan.from_settings(settings)
    # the refill arithmetic of stripe_budget_take (migration 0007), on the database's clock
    row = await pool.fetchrow(
        "SELECT b.tokens, greatest(0, extract(epoch FROM clock_timestamp() - b.updated_at)) AS age,"
        " stripe_budget_factor(b, clock_timestamp(), $2) AS factor FROM stripe_budget b WHERE b.key = $1",
        budget_key(settings.stripe_api_key), RECOVERY_S,
    )  # fmt: skip
    if row is None:
        return BudgetLevel(plan.limit_rps, plan.capacity, plan.capacity, plan.rate, 1.0)
    factor = float(row["factor"])
    rate = plan.rate * factor
    tokens = min(plan.capacity, float(row["tokens"]) + float(row["age"]) * rate)
    return BudgetLevel(plan.limit_rps, plan.capacity, tokens, rate, factor)


def shared_budget(settings: Settings, pool: asyncpg.Pool, metrics: BudgetMetrics | None = None) -> Budget:
    """The key's shared budget (a local one when no API key is configured: nothing will call Stripe)."""
    plan = BudgetPlan.from_settings(settings)
    if settings.stripe_api_key is None:
        return LocalBudget(plan, metrics)
    return SharedBudget(pool, budget_key(settings.stripe_api_key), plan, metrics)
