"""The first check every request of `processor run` passes: no control characters in its path or query.

No id, cursor, coordinate or parameter of ours contains one, and PostgreSQL refuses a NUL in text: let
through, `%00` in an id surfaced as a database error (a 503 that looks like an outage, or a 500). The server
already refuses raw control characters in the request line; this refuses their percent-encoded forms.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from processor.api.responses import problem

#: a percent-encoded C0 control character or DEL
_ENCODED_CONTROL = re.compile(rb"%(?:[01][0-9a-fA-F]|7[fF])")
_DETAIL = "The path or query holds a control character."
#: outside /v1 (the webhook, the probes) errors keep the ingress's `{"error": code}` shape
_PLAIN_REFUSAL = b'{"error":"invalid_characters"}'


class EdgeGuard:
    """ASGI middleware answering 400 to a request whose path or query encodes a control character."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            _ENCODED_CONTROL.search(scope.get("raw_path") or b"") or _ENCODED_CONTROL.search(scope["query_string"])
        ):
            if scope["path"].startswith("/v1/"):
                await problem(400, "invalid_characters", _DETAIL)(scope, receive, send)
                return
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_PLAIN_REFUSAL))]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": _PLAIN_REFUSAL})
            return
        await self.app(scope, receive, send)
