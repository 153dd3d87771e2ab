"""What keeps a web page in the user's browser from driving the emulator (it listens on the user's laptop).

- Host: only names that point at this emulator (DNS rebinding makes an attacker's name resolve to 127.0.0.1,
  but the browser still sends the attacker's name in Host). Starlette's TrustedHostMiddleware does this.
- Origin: a browser names the page that sent a request; only the emulator's own pages may send one (the
  onboarding page's buttons). Cross-site form posts and fetches are refused before any handler runs.
- The control endpoints further need the per-run token (a header a cross-site page cannot set without a CORS
  preflight, which is never granted) and JSON bodies: see `control.py`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from processor.dev.emulator import errors, ids
from processor.dev.emulator.config import LOOPBACK_NAMES, EmulatorConfig

#: addresses that mean "every interface": never a name a client uses
_WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - compared against, not bound to


def allowed_hosts(config: EmulatorConfig) -> list[str]:
    """Host names a legitimate client uses: loopback, the bind address, the public URL's host, the extras."""
    names = [*LOOPBACK_NAMES, *config.allowed_hosts]
    if config.host not in _WILDCARDS:
        names.append(config.host)
    if config.public_url:
        public = urlsplit(config.public_url).hostname
        if public:
            names.append(public)
    return sorted({name.lower() for name in names})


class OriginCheck:
    """Refuse any request whose Origin header (sent by browsers) is not one of the emulator's own hosts."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and not self._own(origin):
                error = errors.ApiError(
                    403, "invalid_request_error", "cross_origin_refused",
                    "Requests from other web pages are refused: the emulator only serves its own pages.",
                )  # fmt: skip
                await error.response(ids.request_id())(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _own(self, origin: str) -> bool:
        # "null" (sandboxed frames, file:// pages) has no hostname and is refused like any foreign origin
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in self.hosts


def middleware(config: EmulatorConfig) -> list[Middleware]:
    """The Host check first (it answers 400 like any server does to a wrong Host), then the Origin check."""
    hosts = allowed_hosts(config)
    return [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False),
        Middleware(OriginCheck, hosts=hosts),
    ]
