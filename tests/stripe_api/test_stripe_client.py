"""The Stripe client against a real local HTTP server standing in for Stripe (or a proxy in front of it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from processor.dev.emulator.config import EmulatorConfig, Knobs
from processor.dev.emulator.runner import running_emulator
from processor.errors import StripeError
from processor.runtime.serving import free_port, serving
from processor.settings import Secret, Settings
from processor.stripe_api.budget import Budget, BudgetMetrics, BudgetPlan, LocalBudget
from processor.stripe_api.client import StripeApi

SANDBOX = {"id": "csb_1", "object": "v2.core.claimable_sandbox", "status": "unclaimed"}


@asynccontextmanager
async def stripe_answering(*answers: Response) -> AsyncIterator[tuple[str, list[str]]]:
    """A server that gives `answers` in turn, then the sandbox; yields its base URL and the paths asked for."""
    asked: list[str] = []
    queue = list(answers)

    async def any_request(request: Request) -> Response:
        asked.append(request.url.path)
        return queue.pop(0) if queue else JSONResponse(SANDBOX)

    port = free_port()
    app = Starlette(routes=[Route("/{path:path}", any_request, methods=["GET", "POST"])])
    async with serving(app, port=port, lifespan="off", date_header=False):  # only the answers' own Date
        yield f"http://127.0.0.1:{port}", asked


def client(base: str, budget: Budget | None = None) -> StripeApi:
    settings = replace(Settings(), stripe_api_key=Secret("sk_test_client"), stripe_api_base=base)
    return StripeApi(settings, max_attempts=3, base_delay_s=0.01, max_delay_s=0.02, budget=budget)


async def test_an_error_body_not_shaped_like_stripes_is_a_retriable_stripe_error() -> None:
    """A proxy (or a server's connection limit) answering 503 with `{"error": "service_unavailable"}` is an
    outage to retry, not a crash: the SDK cannot read that body, and the client still retries and succeeds."""
    busy = JSONResponse({"error": "service_unavailable"}, status_code=503)
    async with stripe_answering(busy) as (base, asked), client(base) as api:
        assert (await api.retrieve_sandbox("csb_1"))["id"] == "csb_1"
    assert len(asked) == 2

    always_busy = [JSONResponse({"error": "service_unavailable"}, status_code=503) for _ in range(3)]
    async with stripe_answering(*always_busy) as (base, asked), client(base) as api:
        with pytest.raises(StripeError) as failed:
            await api.retrieve_sandbox("csb_1")
    assert failed.value.retriable and failed.value.status == 503
    assert len(asked) == 3


async def test_a_closed_client_refuses_calls_instead_of_opening_connections_nobody_closes() -> None:
    """After close() (shutdown), a late call fails as retriable instead of building a new HTTP session that
    would then leak, and without spending a token of the key's budget that other processes could use."""
    registry = CollectorRegistry()
    budget = LocalBudget(BudgetPlan(limit_rps=25), BudgetMetrics(registry))
    async with stripe_answering() as (base, asked):
        api = client(base, budget)
        await api.retrieve_sandbox("csb_1")
        await api.close()
        with pytest.raises(StripeError) as failed:
            await api.retrieve_sandbox("csb_1")
        assert failed.value.retriable
        assert api._session is None
    assert len(asked) == 1
    assert registry.get_sample_value("processor_stripe_budget_requests_total", {"priority": "consumer"}) == 1


async def test_a_fetch_tells_when_stripe_answered_by_its_date_header() -> None:
    """The time of an answer is Stripe's `Date` header (Stripe's clock, like events' `created`); an answer
    without a readable one has no time, so nothing is taken as shown by it."""
    dated = JSONResponse(SANDBOX, headers={"Date": "Wed, 02 Dec 2026 17:00:05 GMT"})
    garbled = JSONResponse(SANDBOX, headers={"Date": "yesterday"})
    async with stripe_answering(dated, garbled) as (base, _asked), client(base) as api:
        first = await api.fetch_sandbox("csb_1")
        second = await api.fetch_sandbox("csb_1")
    assert first.data["id"] == "csb_1"
    assert first.at == datetime(2026, 12, 2, 17, 0, 5, tzinfo=UTC)
    assert second.at is None


async def test_the_emulators_answers_are_dated_by_its_clock() -> None:
    """The emulator dates its answers by its own clock, which tests move forward, like the events it makes."""
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=0, delivery_enabled=False))) as emu:
        emu.advance_clock(timedelta(days=2))
        settings = replace(Settings(), stripe_api_key=Secret(emu.api_key), stripe_api_base=emu.base_url)
        async with StripeApi(settings) as api:
            sandbox = await api.create_sandbox(
                {
                    "enable_mcp_access": False,
                    "onboarding_link_details": {"refresh_url": "https://p.test/r"},
                    "prefill": {"email": "u@p.test", "country": "US"},
                },
                idempotency_key="dated-1",
            )
            answer = await api.fetch_sandbox(sandbox["id"])
    assert answer.at is not None
    assert abs(answer.at - emu.state.clock.now()) < timedelta(seconds=5)
