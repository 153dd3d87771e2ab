"""The one paging convention of every list the processor answers (HTTP API and CLI `--json` alike).

A page is `{"object": "list", "data": [...], "next_cursor": "..." | null}`: pass `next_cursor` back as `cursor`
to get the next page; a page whose `next_cursor` is null is the last. A cursor is opaque to callers: the
key of the last row of its page (e.g. `[created_at, id]`) as base64url JSON, so the next query continues
strictly after that row with a keyset condition and no row is skipped or repeated when rows are added.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

#: the largest page any list serves (each list has its own default)
MAX_PAGE = 1000


class InvalidPage(ValueError):
    """A paging parameter the caller must fix; `param` names it (the API answers 400 `invalid_<param>`)."""

    param = ""


class InvalidCursor(InvalidPage):
    """A `cursor` that is not one this processor handed out."""

    param = "cursor"

    def __init__(self) -> None:
        super().__init__("cursor is not one this API returned")


class InvalidLimit(InvalidPage):
    """A `limit` that is not an integer from 1 to MAX_PAGE."""

    param = "limit"

    def __init__(self) -> None:
        super().__init__(f"limit must be an integer from 1 to {MAX_PAGE}")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list and the cursor of the next (None on the last page)."""

    data: list[Any]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"object": "list", "data": self.data, "next_cursor": self.next_cursor}


def encode_cursor(*parts: Any) -> str:
    """An opaque cursor holding `parts` (JSON values: the sort key of a page's last row)."""
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The `arity` parts `encode_cursor` packed; InvalidCursor for anything else."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursor() from None
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidCursor()
    return parts


def parse_limit(raw: str | int | None, default: int) -> int:
    """`limit` from a query string or an option: `default` when absent, else 1..MAX_PAGE (InvalidLimit)."""
    if raw is None or raw == "":
        return default
    text = str(raw)
    # isascii: str.isdigit() also accepts digits int() refuses ("²"); len: int() refuses 4,301+ digits
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidLimit()
    return int(text)


def page_of(rows: Sequence[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """Split the `limit + 1` rows a keyset query fetched into a page and the next cursor.

    `key(row)` gives the cursor parts of a row; the extra row only says that there is a next page."""
    page = list(rows[:limit])
    more = len(rows) > limit and bool(page)
    return page, encode_cursor(*key(page[-1])) if more else None
