"""Stuck sandboxes, and one sandbox: its timeline, Stripe's view on demand, reconcile, replay of its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from processor.console.forms import Form
from processor.console.session import Session, console_root
from processor.console.views.replays import dry_run_or_start
from processor.errors import StripeError
from processor.operations import dlq as dlq_ops
from processor.operations.inspect import OPEN_STATES, show_sandbox, stuck_sandboxes
from processor.operations.reconcile import reconcile_sandbox
from processor.operations.replay import ReplayRequest
from processor.operations.timespec import parse_duration

if TYPE_CHECKING:
    from processor.console.app import Console

DEFAULT_STUCK_FOR = "3d"
#: Stripe's onboarding links last 7 days; the refresh URL gives a user whose link expired a new one
LINK_LIFETIME = timedelta(days=7)
#: history rows on one page of the timeline
TIMELINE_PAGE = 100


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None


def waited(since: datetime | None, now: datetime) -> str:
    """`3d 4h`, `5h 12m`, `12m`, `40s`: how long since `since`."""
    if since is None:
        return "?"
    seconds = int((now - since).total_seconds())
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def link_state(row: dict[str, Any], now: datetime) -> str:
    """What the onboarding link can still do for this sandbox's user."""
    state = row["state"]
    if state == "unclaimed":
        created = _moment(row.get("created_at"))
        if created is not None and now - created > LINK_LIFETIME:
            return "not used; the first link has expired (the refresh URL gives a new one)"
        return "sent, not used yet"
    return {
        "claimed": "used: claimed",
        "pending_onboarding": "used: the new account's onboarding is not finished",
        "pending_install": "used: waiting for the app to be installed",
        "installed": "used: app installed, not live yet",
    }.get(state, "used")


async def stuck(console: Console, request: Request, session: Session) -> Response:
    query = request.query_params
    state = query.get("state", "")
    older_than = query.get("older_than", "").strip() or DEFAULT_STUCK_FOR
    states = (state,) if state in OPEN_STATES else OPEN_STATES
    rows = await stuck_sandboxes(console.db, states=states, older_than=parse_duration(older_than), limit=500)
    now = datetime.now(UTC)
    for row in rows:
        row["waited"] = waited(_moment(row["entered_at"]), now)
        row["link"] = link_state(row, now)
    return console.render(request, "stuck.html", {
        "rows": rows, "state": state if state in OPEN_STATES else "", "states": OPEN_STATES,
        "older_than": older_than,
    }, session=session)

async def sandbox(console: Console, request: Request, session: Session) -> Response:
    sandbox_id = request.path_params["sandbox_id"]
    before = request.query_params.get("before", "")
    found = await show_sandbox(console.db, sandbox_id, last=TIMELINE_PAGE,
                               before=int(before) if before.isdigit() else None)
    if found is None:
        return console.problem(request, session, 404, "No such sandbox", f"We know no sandbox {sandbox_id}.")
    stripe_view, stripe_error = None, None
    if request.query_params.get("stripe") == "1":
        if console.stripe is None:
            stripe_error = "No Stripe client is configured for this console (STRIPE_API_KEY)."
        else:
            try:  # one fetch, through the client's rate budget like every other Stripe call
                fetched = await console.stripe.retrieve_sandbox(sandbox_id)
                stripe_view = orjson.dumps(fetched, option=orjson.OPT_INDENT_2).decode()
            except StripeError as exc:
                stripe_error = f"Stripe answered: {exc}"
    dead = await dlq_ops.list_dlq(console.settings, console.log, console.db,
                                  dlq_ops.DlqFilter(sandbox_id=sandbox_id), include_resolved=True, limit=100)
    return console.render(request, "sandbox.html", {
        "found": found, "sandbox": found["sandbox"], "sid": sandbox_id, "dead": dead,
        "stripe_view": stripe_view, "stripe_error": stripe_error,
        "stripe_json": orjson.dumps(found["sandbox"].get("stripe"), option=orjson.OPT_INDENT_2).decode(),
    }, session=session)

async def reconcile(console: Console, request: Request, session: Session, form: Form) -> Response:
    sandbox_id = request.path_params["sandbox_id"]
    if console.stripe is None:
        raise ValueError("No Stripe client is configured for this console (STRIPE_API_KEY).")
    report = await reconcile_sandbox(console.settings, console.db, console.stripe, sandbox_id)
    return console.render(request, "reconciled.html", {"sid": sandbox_id, "report": report.as_dict()},
                          session=session)

async def replay_events(console: Console, request: Request, session: Session, form: Form) -> Response:
    sandbox_id = request.path_params["sandbox_id"]
    return await dry_run_or_start(
        console, request, session, form, ReplayRequest("sandbox", sandbox_id=sandbox_id),
        what=f"every stored event of sandbox {sandbox_id}", fields={},
        back=f"{console_root(request)}/sandboxes/{quote(sandbox_id, safe='')}",
    )


def routes(console: Console) -> list[BaseRoute]:
    from processor.console.app import action, page

    return [
        Route("/stuck", page(console, partial(stuck, console)), methods=["GET"]),
        Route("/sandboxes/{sandbox_id}", page(console, partial(sandbox, console)), methods=["GET"]),
        Route("/sandboxes/{sandbox_id}/reconcile", action(console, partial(reconcile, console), changes=True),
              methods=["POST"]),
        Route("/sandboxes/{sandbox_id}/replay", action(console, partial(replay_events, console), changes=True),
              methods=["POST"]),
    ]
