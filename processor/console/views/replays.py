"""Replays: the dry run and confirmation every replay goes through, a run's progress, and the list of runs."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from processor.console.forms import Form
from processor.console.session import Session, console_root
from processor.operations.replay import ReplayRequest, list_replay_runs, replay

if TYPE_CHECKING:
    from processor.console.app import Console

#: how many records a dry run's confirmation page lists (the count covers all of them)
LISTED = 200
#: seconds between refreshes of a running replay's page (a meta refresh: no script)
REFRESH_S = 1


async def dry_run_or_start(console: Console, request: Request, session: Session, form: Form,
                           replay_request: ReplayRequest, *, what: str, fields: dict[str, str | list[str]],
                           back: str) -> Response:
    """Step `dry` (the default): show what the replay would do and ask to confirm. Step `confirm`: start it in
    the background and go to its page. `fields` are posted again with the confirmation."""
    if form.get("step") == "confirm":
        job = await console.jobs.start_replay(replay_request, expected=int(form.get("expected") or 0) or None)
        return RedirectResponse(f"{console_root(request)}/replays/{quote(job.id, safe='')}", 303)
    report = await replay(console.settings, console.log, console.db, replay_request, stripe=console.stripe,
                          dry_run=True)
    return console.render(request, "replay_confirm.html", {
        "what": what, "report": report, "listed": report.listed[:LISTED], "fields": fields,
        "action": request.url.path, "back": back,
    }, session=session)


def routes(console: Console) -> list[BaseRoute]:
    from processor.console.app import page

    async def runs(request: Request, session: Session) -> Response:
        return console.render(request, "replays.html", {"runs": await list_replay_runs(console.db)}, session=session)

    async def run(request: Request, session: Session) -> Response:
        run_id = request.path_params["run_id"]
        job = await console.jobs.get(run_id)
        found = await list_replay_runs(console.db, run_id=run_id, limit=1)
        if job is None and not found:
            return console.problem(request, session, 404, "No such replay run", f"Nothing is known of {run_id}.")
        running = (job is not None and job.running) or (bool(found) and found[0].status == "running")
        return console.render(request, "replay_run.html", {
            "run_id": run_id, "job": job, "row": found[0] if found else None, "running": running,
            "refresh_s": REFRESH_S,
        }, session=session)

    return [
        Route("/replays", page(console, runs), methods=["GET"]),
        Route("/replays/{run_id}", page(console, run), methods=["GET"]),
    ]
