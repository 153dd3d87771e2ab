"""The overview: the lifecycle funnel, transitions per hour, lag, DLQ size, Stripe budget, ingress outcomes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from processor import constants as c
from processor.console import charts
from processor.console.session import Session
from processor.ingress.metrics import IngressMetrics
from processor.operations import dlq as dlq_ops
from processor.operations.overview import conversions, events_by_outcome, state_counts, transitions_per_hour
from processor.operations.status import read_status
from processor.stripe_api.budget import read_budget

if TYPE_CHECKING:
    from processor.console.app import Console

#: the windows an operator can choose, by their label in the query string
WINDOWS = {"6h": timedelta(hours=6), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
DEFAULT_WINDOW = "24h"


def delivery_counts(metrics: IngressMetrics) -> dict[str, int]:
    """Webhook deliveries this process's ingress answered since it started, by outcome."""
    counts: Counter[str] = Counter()
    for family in metrics.registry.collect():
        if family.name == "processor_ingress_deliveries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["outcome"]] += int(sample.value)
    return dict(counts.most_common())


async def open_dead_letters(console: Console) -> int:
    """Dead-lettered records nobody replayed or purged yet."""
    count = 0
    async for chunk in dlq_ops.dlq_entries(console.settings, console.log, console.db):
        count += len(chunk)
    return count


def routes(console: Console) -> list[BaseRoute]:
    from processor.console.app import page

    async def overview(request: Request, session: Session) -> Response:
        window = request.query_params.get("window", DEFAULT_WINDOW)
        if window not in WINDOWS:
            window = DEFAULT_WINDOW
        now = datetime.now(UTC)
        since = now - WINDOWS[window]
        counts = await state_counts(console.db)
        hours = await transitions_per_hour(console.db, since, now)
        outcomes = await events_by_outcome(console.db, since)
        deliveries = delivery_counts(console.ingress_metrics) if console.ingress_metrics else None
        status = await read_status(console.settings, console.log, console.db)
        return console.render(request, "overview.html", {
            "window": window,
            "windows": list(WINDOWS),
            "counts": counts,
            "total": sum(counts.values()),
            "funnel_chart": charts.bar_chart(charts.state_bars(counts), "Sandboxes in each state now"),
            "conversions": await conversions(console.db, since),
            "hours": hours,
            "hours_chart": charts.transitions_chart(hours, f"Transitions per hour, last {window}"),
            "legend": charts.STATE_COLOURS,
            "transitions": sum(h.total for h in hours),
            "outcomes": outcomes,
            "outcomes_chart": charts.bar_chart([charts.Bar(k, v) for k, v in outcomes.items()],
                                               f"Events processed by outcome, last {window}") if outcomes else None,
            "deliveries": deliveries,
            "deliveries_chart": charts.bar_chart([charts.Bar(k, v) for k, v in deliveries.items()],
                                                 "Webhook deliveries by outcome") if deliveries else None,
            "status": status,
            "dlq_open": await open_dead_letters(console),
            "dlq_topic": console.settings.topic(c.TOPIC_DLQ),
            # the key's budget shared by every process (the row the metrics read too), not this process's share
            "budget": await read_budget(console.settings, console.db.pool),
        }, session=session)

    return [Route("/", page(console, overview), methods=["GET"])]
