"""The small HTML pages a person sees at the refresh URL instead of a redirect (or a Stripe error)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from starlette.responses import HTMLResponse

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1a1f36}}
h1{{font-size:1.4rem}}</style></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


def page(status: int, title: str, message: str, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """A page that says what happened and what to do; never cached (the next visit may be different)."""
    body = _PAGE.format(title=escape(title), message=escape(message))
    return HTMLResponse(body, status, {"Cache-Control": "no-store", **(headers or {})})


def invalid_link() -> HTMLResponse:
    return page(403, "This link is not valid", "The link is incomplete or was altered. Use the link you were given.")


def rate_limited(retry_after_s: int) -> HTMLResponse:
    return page(
        429,
        "Too many requests",
        f"A new onboarding link was requested several times in a row. Try again in {retry_after_s} seconds.",
        {"Retry-After": str(retry_after_s)},
    )


def expired() -> HTMLResponse:
    return page(
        410,
        "This sandbox has expired",
        "The sandbox was not claimed in time and no longer exists. Ask for a new sandbox.",
    )


def claimed(live: bool) -> HTMLResponse:
    status = "is live" if live else "has already been claimed"
    return page(
        409,
        f"This sandbox {status}",
        "There is nothing left to do with this link: continue in your Stripe Dashboard.",
    )


def unknown() -> HTMLResponse:
    return page(404, "Sandbox not found", "We do not know this sandbox. Use the link you were given.")


def unavailable(retry_after_s: int) -> HTMLResponse:
    return page(
        503,
        "Please try again in a moment",
        "We could not get a new onboarding link from Stripe just now.",
        {"Retry-After": str(retry_after_s)},
    )


def failed() -> HTMLResponse:
    return page(502, "Something went wrong", "Stripe refused to renew the onboarding link. Contact support.")
