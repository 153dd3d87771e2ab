"""Bearer-token authentication of the sandbox API (`PROCESSOR_API_TOKENS`).

Every configured token is compared in constant time, and all of them are always compared, so neither a
prefix nor which token matched leaks through timing. Tokens are never logged; a caller is known by a SHA-256
fingerprint of its token, which is safe to keep (the tokens are long random strings) and used only to scope
idempotency keys per caller.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from processor.api.responses import Endpoint, guarded, problem
from processor.settings import Secret


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; `fingerprint` is the hex SHA-256 of its token."""

    fingerprint: str

    def __repr__(self) -> str:
        return "Principal(...)"


class BearerAuth:
    """Checks `Authorization: Bearer <token>` against the configured tokens; none configured = nobody gets in."""

    def __init__(self, tokens: Sequence[Secret]) -> None:
        self._tokens = tuple(t.reveal().encode() for t in tokens)

    def __repr__(self) -> str:
        return f"BearerAuth(tokens={len(self._tokens)})"

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, request: Request) -> Principal | None:
        """The caller of `request`, or None if it shows no valid token."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        presented = value.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            return None
        matched = False
        for token in self._tokens:  # no early exit: the time taken does not depend on which token matched
            matched |= hmac.compare_digest(token, presented)
        return Principal(hashlib.sha256(presented).hexdigest()) if matched else None


Handler = Callable[[Request, Principal], Awaitable[Response]]


def unauthorized() -> Response:
    """401 with the challenge; the body says nothing about why the token failed."""
    return problem(
        401,
        "unauthorized",
        "Send a valid API token as 'Authorization: Bearer <token>'.",
        headers={"WWW-Authenticate": 'Bearer realm="processor"'},
    )


def authenticated(auth: BearerAuth, handler: Handler, after: Callable[[], None] | None = None) -> Endpoint:
    """The endpoint of every `/v1/*` route: 401 without a valid token, else `handler(request, caller)` with
    its failures mapped to problems (`guarded`); `after` runs once the handler is done, whatever happened."""

    async def run(request: Request) -> Response:
        principal = auth.authenticate(request)
        if principal is None:
            return unauthorized()
        try:
            return await handler(request, principal)
        finally:
            if after is not None:
                after()

    return guarded(run)
