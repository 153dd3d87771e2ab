"""Dead letters: the list with filters, one record with its error, replay (selected or all matching) and purge."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from processor.console.forms import Form
from processor.console.session import Session, console_root
from processor.console.views.replays import dry_run_or_start
from processor.operations import dlq as dlq_ops
from processor.operations.replay import ReplayRequest

if TYPE_CHECKING:
    from processor.console.app import Console

#: records one page of the list shows
PAGE = 500
FILTERS = ("error_class", "event_type", "sandbox_id")


def _filter(source: Form | dict[str, str], *, selected: list[str] | None = None) -> dlq_ops.DlqFilter:
    def text(name: str) -> str | None:
        value = source.get(name, "").strip()
        return value or None

    for coordinate in selected or ():
        dlq_ops.parse_coordinate(coordinate)  # ValueError names a malformed one
    return dlq_ops.DlqFilter(text("error_class"), text("event_type"), text("sandbox_id"),
                             frozenset(selected or ()))


def _fields(where: dlq_ops.DlqFilter, scope: str) -> dict[str, str | list[str]]:
    """The form fields that name `where` again (on the confirmation page)."""
    fields: dict[str, str | list[str]] = {"scope": scope}
    for name in FILTERS:
        value = getattr(where, name)
        if value:
            fields[name] = value
    if where.coordinates:
        fields["c"] = sorted(where.coordinates)
    return fields


def _chosen(form: Form) -> tuple[dlq_ops.DlqFilter, str]:
    """The records a post is about: the ticked ones (`scope=selected`) or every one matching the filters."""
    scope = form.get("scope", "selected")
    if scope == "selected":
        ticked = form.all("c")
        if not ticked:
            raise ValueError("Tick at least one record, or choose 'all matching'.")
        return _filter(form, selected=ticked), scope
    return _filter(form), "matching"


def _describe(where: dlq_ops.DlqFilter) -> str:
    parts = [f"{name.replace('_', ' ')} {getattr(where, name)}" for name in FILTERS if getattr(where, name)]
    if where.coordinates:
        return f"{len(where.coordinates)} selected dead-lettered record(s)"
    return "every open dead-lettered record" + (f" with {', '.join(parts)}" if parts else "")


async def listing(console: Console, request: Request, session: Session) -> Response:
    query = dict(request.query_params)
    where = _filter(query)
    include_resolved = query.get("resolved") == "1"
    # one pass over the DLQ: the page's records and, for the filters' choices, the values present; only
    # the page is held, so a DLQ of a million records after an outage costs a read, not a million objects
    entries: list[dlq_ops.DlqEntry] = []
    error_classes: set[str] = set()
    event_types: set[str] = set()
    async for chunk in dlq_ops.dlq_entries(console.settings, console.log, console.db,
                                           include_resolved=include_resolved):
        for e in chunk:
            error_classes.add(e.error_class or "")
            event_types.add(e.event_type or "")
            if len(entries) <= PAGE and where.matches(e):
                entries.append(e)
    return console.render(request, "dlq.html", {
        "entries": entries[:PAGE], "more": len(entries) > PAGE, "query": query, "resolved": include_resolved,
        "error_classes": sorted(error_classes - {""}), "event_types": sorted(event_types - {""}),
    }, session=session)

async def entry(console: Console, request: Request, session: Session) -> Response:
    found = await dlq_ops.show_dlq(console.settings, console.log, console.db, request.path_params["coordinate"])
    if found is None:
        return console.problem(request, session, 404, "No such dead-lettered record",
                               "It may have been purged from the log.")
    detail = found.detail()
    return console.render(request, "dlq_entry.html", {
        "e": found, "detail": detail,
        "body": orjson.dumps(detail["body"], option=orjson.OPT_INDENT_2).decode(),
    }, session=session)

async def replay_dead(console: Console, request: Request, session: Session, form: Form) -> Response:
    where, scope = _chosen(form)
    back = f"{console_root(request)}/dlq?" + urlencode({k: v for k, v in _fields(where, scope).items()
                                                          if isinstance(v, str) and k != "scope"})
    return await dry_run_or_start(console, request, session, form, ReplayRequest("dlq", dlq=where),
                                  what=_describe(where), fields=_fields(where, scope), back=back)

async def purge(console: Console, request: Request, session: Session, form: Form) -> Response:
    where, scope = _chosen(form)
    if form.get("step") != "confirm":
        matching = await dlq_ops.list_dlq(console.settings, console.log, console.db, where)
        return console.render(request, "purge_confirm.html", {
            "what": _describe(where), "entries": matching, "fields": _fields(where, scope),
            "action": request.url.path, "back": f"{console_root(request)}/dlq",
        }, session=session)
    result = await dlq_ops.purge_dlq(console.settings, console.log, console.db, where)
    return console.render(request, "purged.html", {"result": result, "what": _describe(where)},
                          session=session)


def routes(console: Console) -> list[BaseRoute]:
    from processor.console.app import action, page

    return [
        Route("/dlq", page(console, partial(listing, console)), methods=["GET"]),
        Route("/dlq/replay", action(console, partial(replay_dead, console), changes=True), methods=["POST"]),
        Route("/dlq/purge", action(console, partial(purge, console), changes=True), methods=["POST"]),
        Route("/dlq/{coordinate}", page(console, partial(entry, console)), methods=["GET"]),
    ]
