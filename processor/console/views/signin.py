"""Sign-in with an API token, and sign-out.

Sign-in attempts are capped per client address (SIGNIN_ATTEMPTS a minute, in this process's memory): tokens
are long and random, but an operator's token may not be, and nothing else slows down someone trying many.
Every attempt counts, not only wrong ones, so the cap cannot be probed for which answer was right; an attempt
over the cap locks the client out for LOCKOUT_S, and every further one starts that minute again.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from processor.console.forms import FormTooLarge, read_form, same_origin
from processor.console.session import (
    LOCKOUT_S,
    SESSION_COOKIE,
    SESSION_LIFETIME_S,
    SIGNIN_ATTEMPTS,
    SIGNIN_COOKIE,
    SIGNIN_LIFETIME_S,
    clear_cookie,
    console_root,
    set_cookie,
)

if TYPE_CHECKING:
    from processor.console.app import Console

log = logging.getLogger(__name__)


class SignIn:
    """The sign-in form, its post (with the per-client cap) and sign-out."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def form_page(self, request: Request, nonce: str, status: int = 200, error: str | None = None) -> Response:
        auth = self.console.auth
        response = self.console.render(request, "signin.html", {
            "signin_csrf": auth.csrf_token(f"signin:{nonce}"), "error": error, "nobody": not auth.configured,
        }, status)
        set_cookie(response, request, SIGNIN_COOKIE, nonce, SIGNIN_LIFETIME_S)
        return response

    async def show(self, request: Request) -> Response:
        if self.console.auth.session(request) is not None:
            return RedirectResponse(f"{console_root(request)}/", 303)
        return self.form_page(request, request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(18))

    async def sign_in(self, request: Request) -> Response:
        nonce = request.cookies.get(SIGNIN_COOKIE) or ""
        try:
            form = await read_form(request)
        except FormTooLarge:
            return self.form_page(request, secrets.token_urlsafe(18), 413, "That is not a token.")
        if not nonce or not same_origin(request) or not self.console.auth.csrf_ok(f"signin:{nonce}",
                                                                                   form.get("csrf")):
            return self.form_page(request, secrets.token_urlsafe(18), 403,
                                  "The sign-in form expired or came from elsewhere. Please try again.")
        if (refused := self._over_the_cap(request, nonce)) is not None:
            return refused
        signed = self.console.auth.sign_in(form.get("token"))
        if signed is None:
            # the same answer for every wrong token: nothing says how close it was
            return self.form_page(request, nonce, 401, "That token is not valid.")
        _session, value = signed
        response = RedirectResponse(f"{console_root(request)}/", 303)
        set_cookie(response, request, SESSION_COOKIE, value, SESSION_LIFETIME_S)
        clear_cookie(response, request, SIGNIN_COOKIE)
        return response

    def _over_the_cap(self, request: Request, nonce: str) -> Response | None:
        """The 429 page when this client made too many attempts, else None (and the attempt is counted)."""
        client = request.client.host if request.client else "unknown"
        attempts = self.console.signin_attempts
        if attempts.take(client) == 0:
            return None
        # locked out for a whole minute from this attempt on: hammering on keeps the door shut
        attempts.drain(client, LOCKOUT_S)
        log.warning("console: more than %d sign-in attempts a minute from %s: refused for %d s",
                    SIGNIN_ATTEMPTS, client, LOCKOUT_S)
        response = self.form_page(request, nonce, 429, f"Too many sign-in attempts. Try again in {LOCKOUT_S} seconds.")
        response.headers["Retry-After"] = str(LOCKOUT_S)
        return response

    async def sign_out(self, request: Request) -> Response:
        session = self.console.auth.session(request)
        try:
            form = await read_form(request)
        except FormTooLarge:
            form = None
        if session is not None and (form is None or not self.console.auth.csrf_ok(session.sid, form.get("csrf"))):
            return self.console.problem(request, session, 403,
                                        "Refused: the form's security token is missing or wrong",
                                        "Reload the page and try again.")
        response = RedirectResponse(f"{console_root(request)}/signin", 303)
        clear_cookie(response, request, SESSION_COOKIE)
        return response


def routes(console: Console) -> list[BaseRoute]:
    pages = SignIn(console)
    return [
        Route("/signin", pages.show, methods=["GET"]),
        Route("/signin", pages.sign_in, methods=["POST"]),
        Route("/signout", pages.sign_out, methods=["POST"]),
    ]
