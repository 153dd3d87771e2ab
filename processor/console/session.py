"""Console sign-in: an API token exchanged for a signed, expiring session cookie, and the role it carries.

A token from PROCESSOR_API_TOKENS signs in as an operator (look, replay, purge, reconcile); one from
PROCESSOR_CONSOLE_READONLY_TOKENS as read-only (look). Tokens are compared in constant time, all of them every
time (as `processor.api.auth` does). The cookie holds no token: a random session id, the role, and a SHA-256
fingerprint of the token, signed with a key derived from PROCESSOR_SIGNING_KEY (itsdangerous, with its
timestamp checked against the lifetime). Each request checks the fingerprint against the tokens configured
now, so removing a token ends its sessions at the next click.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from processor.settings import Secret

#: the session cookie; path-scoped to the console so the API and webhooks never see it
SESSION_COOKIE = "processor_console"
#: a random value bound to the sign-in form before there is a session (login CSRF)
SIGNIN_COOKIE = "processor_console_signin"
#: a session lasts one on-call shift; then the token is asked for again
SESSION_LIFETIME_S = 8 * 3600
SIGNIN_LIFETIME_S = 3600
#: sign-in attempts a client address may make per minute (bursts of as many, then one every 6 s)
SIGNIN_ATTEMPTS = 10
#: an attempt over the cap shuts the form for this client for this long
LOCKOUT_S = 60


class Role(StrEnum):
    OPERATOR = "operator"
    READ_ONLY = "read-only"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in operator: `sid` is random per sign-in; `fingerprint` names the token without revealing it."""

    sid: str
    role: Role
    fingerprint: str

    @property
    def can_act(self) -> bool:
        """May replay, purge and reconcile (read-only sessions may only look)."""
        return self.role is Role.OPERATOR

    def __repr__(self) -> str:
        return f"Session(role={self.role.value})"


def derive_key(signing_key: Secret, purpose: str) -> bytes:
    """A key for one purpose from the processor's signing key (refresh URLs use the key itself)."""
    return hmac.new(signing_key.reveal().encode(), f"processor console {purpose}".encode(), hashlib.sha256).digest()


def fingerprint(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


class ConsoleAuth:
    """Checks tokens, issues and reads session cookies, and makes and checks CSRF tokens."""

    def __init__(self, operator_tokens: Sequence[Secret], readonly_tokens: Sequence[Secret], key: Secret) -> None:
        # an operator token listed as read-only too stays an operator: the wider role wins
        self._tokens = tuple((t.reveal().encode(), Role.READ_ONLY) for t in readonly_tokens) + tuple(
            (t.reveal().encode(), Role.OPERATOR) for t in operator_tokens
        )
        self._roles = {fingerprint(token): role for token, role in self._tokens}
        self._sessions = URLSafeTimedSerializer(derive_key(key, "session"), salt="session")
        self._csrf_key = derive_key(key, "csrf")

    def __repr__(self) -> str:
        return f"ConsoleAuth(tokens={len(self._tokens)})"

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def sign_in(self, presented: str) -> tuple[Session, str] | None:
        """A new session and its cookie value for a valid token, else None."""
        candidate = presented.strip().encode()
        role: Role | None = None
        for token, token_role in self._tokens:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(token, candidate) and candidate:
                role = token_role
        if role is None:
            return None
        session = Session(secrets.token_urlsafe(18), role, fingerprint(candidate))
        value = self._sessions.dumps({"sid": session.sid, "role": role.value, "fp": session.fingerprint})
        return session, value

    def session(self, request: Request) -> Session | None:
        """The session the request's cookie carries, if it is signed by us, unexpired and its token still valid."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._sessions.loads(raw, max_age=SESSION_LIFETIME_S)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        fp, role = data.get("fp"), data.get("role")
        if not isinstance(fp, str) or self._roles.get(fp) is None or self._roles[fp].value != role:
            return None  # the token was removed, or moved to another role: sign in again
        return Session(str(data.get("sid")), Role(role), fp)

    def csrf_token(self, bound_to: str) -> str:
        """The token forms of the session (or sign-in form) `bound_to` must carry."""
        return hmac.new(self._csrf_key, bound_to.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, bound_to: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(bound_to), presented or "")


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """HttpOnly, SameSite=Strict, scoped to the console, Secure whenever the console is reached over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=console_root(request) + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=console_root(request) + "/", httponly=True, samesite="strict")


def console_root(request: Request) -> str:
    """Where the console is mounted (`/console`), from the mount's root_path."""
    return str(request.scope.get("root_path", "")).rstrip("/")
