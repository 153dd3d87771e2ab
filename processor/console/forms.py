"""Form posts of the console: a bounded body, parsed without a multipart library, and their CSRF check.

Every form carries a hidden `csrf` field: an HMAC of the session id (of the sign-in cookie on the sign-in
form) that another site cannot read or compute. A post must also come from the console's own origin when the
browser says where it comes from (`Origin`); SameSite=Strict cookies are a third wall, not the only one.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request

#: a console form is a few ids and filters; a selection of many dead letters stays far below this
MAX_FORM_BYTES = 256 * 1024


class FormTooLarge(Exception):
    """The posted form is larger than MAX_FORM_BYTES."""


class Form:
    """The fields of a posted `application/x-www-form-urlencoded` form."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name)
        return values[0].strip() if values else default

    def all(self, name: str) -> list[str]:
        return [v.strip() for v in self._fields.get(name, []) if v.strip()]

    def optional(self, name: str) -> str | None:
        return self.get(name) or None


async def read_form(request: Request) -> Form:
    """The posted form, read up to MAX_FORM_BYTES (FormTooLarge beyond)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge()
    return Form(parse_qs(body.decode(errors="replace"), keep_blank_values=False, max_num_fields=10_000))


def same_origin(request: Request) -> bool:
    """False when the browser says the post comes from another origin (no Origin header: not a browser's
    cross-site post, which always carries one)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"
