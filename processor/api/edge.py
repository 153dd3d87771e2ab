"""The first check every request of `processor run` passes: no control characters in its path or query.

No id, cursor, coordinate or parameter of ours contains one, and PostgreSQL refuses a NUL in text: let
through, `%00` in an id surfaced as a database error (a 503 that looks like an outage, or a 500). The server
already refuses raw control characters in the request line; this refuses their percent-encoded forms.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

#: a percent-encoded C0 control character or DEL
_ENCODED_CONTROL = re.compile(rb"%(?:[01][0-9a-fA-F]|7[fF])")
_REFUSAL = b'{"error":"invalid_characters","message":"The path or query holds a control character."}'


class EdgeGuard:
    """ASGI middleware answering 400 to a request whose path or query encodes a control character."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            _ENCODED_CONTROL.search(scope.get("raw_path") or b"") or _ENCODED_CONTROL.search(scope["query_string"])
        ):
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_REFUSAL))]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": _REFUSAL})
            return
        await self.app(scope, receive, send)
