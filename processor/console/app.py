"""The operator console: server-rendered pages under /console/ on the operations library.

    app = build_console_app(settings, event_log, db, stripe_api)   # all opened and owned by the caller
    Mount("/console", app=app)

`processor run` mounts it next to the API; `processor console` serves it alone (the distributed deployment).
Every page but sign-in needs a session (processor/console/session.py); every form post a CSRF token, and the
ones that change something (replay, purge, reconcile) the operator role. Pages are Jinja2 templates, charts
inline SVG, and the one stylesheet is served from here: nothing is fetched from elsewhere.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from processor.console.forms import Form, FormTooLarge, read_form, same_origin
from processor.console.session import SIGNIN_ATTEMPTS, ConsoleAuth, Session, console_root
from processor.db.pool import DATABASE_ERRORS, Database
from processor.errors import DatabaseUnavailable, ProcessorError
from processor.eventlog.base import EventLog
from processor.ingress.metrics import IngressMetrics
from processor.operations.jobs import OperatorJobs
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from processor.tokenbucket import TokenBuckets

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
#: no script at all, styles and images from here only, never framed, never cached (pages show live data)
SECURITY_HEADERS = (
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none';"
     b" base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: with no-referrer the browser posts forms with `Origin: null`
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


@dataclass(slots=True)
class Console:
    """What every page handler needs."""

    settings: Settings
    log: EventLog
    db: Database
    stripe: StripeApi | None
    auth: ConsoleAuth
    templates: Jinja2Templates
    jobs: OperatorJobs
    ingress_metrics: IngressMetrics | None
    #: sign-in attempts per client address (processor/console/views/signin.py)
    signin_attempts: TokenBuckets = field(default_factory=lambda: TokenBuckets.per_period(SIGNIN_ATTEMPTS, 60.0))

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200,
               session: Session | None = None) -> Response:
        base = console_root(request)
        return self.templates.TemplateResponse(request, name, {
            "base": base,
            "session": session,
            "csrf": self.auth.csrf_token(session.sid) if session else "",
            **context,
        }, status_code=status)

    def problem(self, request: Request, session: Session | None, status: int, title: str, detail: str) -> Response:
        return self.render(request, "problem.html", {"title": title, "detail": detail}, status, session)


def when(value: object) -> str:
    """An RFC 3339 time (or a datetime) as `2026-12-02 11:08:34` UTC, for tables; anything else as it is."""
    text = value.isoformat() if isinstance(value, datetime) else str(value or "")
    return text.replace("T", " ")[:19] if len(text) >= 19 and text[10:11] in ("T", " ") else text


PageHandler = Callable[[Request, Session], Awaitable[Response]]
ActionHandler = Callable[[Request, Session, Form], Awaitable[Response]]
_DATABASE_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, DatabaseUnavailable)


def _failures(console: Console, request: Request, session: Session, exc: Exception) -> Response:
    """An error as a page: the operator's input (400), an outage (503), or a bug (500, logged)."""
    if isinstance(exc, ValueError | OverflowError):
        return console.problem(request, session, 400, "That did not work", str(exc))
    if isinstance(exc, _DATABASE_ERRORS):
        log.warning("console: %s %s: database: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return console.problem(request, session, 503, "The database is not answering", "Try again in a moment.")
    if isinstance(exc, ProcessorError):
        return console.problem(request, session, 503 if exc.retriable else 409, "That did not work", str(exc))
    log.exception("console: unexpected error in %s %s", request.method, request.url.path)
    return console.problem(request, session, 500, "Unexpected error", "It was logged.")


def page(console: Console, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """A GET page: a signed-in session or the sign-in page."""

    async def endpoint(request: Request) -> Response:
        session = console.auth.session(request)
        if session is None:
            return RedirectResponse(f"{console_root(request)}/signin", 303)
        try:
            return await handler(request, session)
        except Exception as exc:
            return _failures(console, request, session, exc)

    return endpoint


def action(console: Console, handler: ActionHandler, *, changes: bool) -> Callable[[Request], Awaitable[Response]]:
    """A form post: session, same origin and CSRF token checked; `changes` (replay, purge, reconcile) also
    needs the operator role. A dry run is a `changes` post too: it shows what the role may not do."""

    async def endpoint(request: Request) -> Response:
        session = console.auth.session(request)
        if session is None:
            return console.problem(request, None, 401, "Sign in first", "Your session ended; sign in again.")
        try:
            form = await read_form(request)
        except FormTooLarge:
            return console.problem(request, session, 413, "Too much at once", "Select fewer records.")
        if not same_origin(request) or not console.auth.csrf_ok(session.sid, form.get("csrf")):
            return console.problem(request, session, 403, "Refused: the form's security token is missing or wrong",
                                   "Reload the page and try again. Nothing was changed.")
        if changes and not session.can_act:
            return console.problem(request, session, 403, "Refused: your role is read-only",
                                   "Read-only sign-ins can look but not replay, purge or reconcile. "
                                   "Nothing was changed.")
        try:
            return await handler(request, session, form)
        except Exception as exc:
            return _failures(console, request, session, exc)

    return endpoint


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer of the console."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def build_console_app(settings: Settings, event_log: EventLog, db: Database, stripe: StripeApi | None, *,
                      ingress_metrics: IngressMetrics | None = None, jobs: OperatorJobs | None = None) -> Starlette:
    """The console as an ASGI app to mount at /console; `ingress_metrics` when the ingress runs in this process,
    `jobs` the process's operator jobs when the operator API runs next to it (app.state.console.jobs else)."""
    from processor.console.views import deadletters, overview, replays, sandboxes, signin

    key = settings.signing_key
    if key is None:
        # sessions then end when this process does, and do not carry across replicas
        log.warning("PROCESSOR_SIGNING_KEY is not set: console sessions are signed with a key of this process only")
        key = Secret(secrets.token_urlsafe(32))
    auth = ConsoleAuth(settings.api_tokens, settings.console_readonly_tokens, key)
    if not auth.configured:
        log.warning("no PROCESSOR_API_TOKENS or PROCESSOR_CONSOLE_READONLY_TOKENS: nobody can sign in to the console")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["when"] = when
    console = Console(settings, event_log, db, stripe, auth, templates,
                      jobs or OperatorJobs(settings, event_log, db, stripe),
                      ingress_metrics)
    routes: list[BaseRoute] = [
        *signin.routes(console),
        *overview.routes(console),
        *sandboxes.routes(console),
        *deadletters.routes(console),
        *replays.routes(console),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    return app


def console_routes(app: Starlette) -> list[BaseRoute]:
    """/console (redirected to /console/) and the console mounted under it, for a parent app's routes."""

    async def to_console(request: Request) -> Response:
        return RedirectResponse("/console/", 307)

    return [Route("/console", to_console, methods=["GET"]), Mount("/console", app=app)]
