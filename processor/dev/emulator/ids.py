"""Identifiers and keys shaped like Stripe's (prefix + random base62), from the `secrets` generator."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    """A random base62 string; used for ids and for key material alike, so it is always `secrets`-grade."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def sandbox_id() -> str:
    return f"clmsbx_test_61{random_token(52)}"


def event_id() -> str:
    return f"evt_test_65{random_token(52)}"


def v1_event_id() -> str:
    return f"evt_1{random_token(23)}"


def account_id() -> str:
    return f"acct_1{random_token(15)}"


def request_id() -> str:
    return f"req_{random_token(14)}"


def endpoint_id() -> str:
    return f"we_{random_token(24)}"


def webhook_secret() -> str:
    return f"whsec_{random_token(32)}"


def api_keys(account: str, with_mcp: bool) -> dict[str, str | None]:
    """One-time keys of a new sandbox, tied to its account id like Stripe's keys are."""
    suffix = account.removeprefix("acct_")
    return {
        "mcp": f"rk_test_{suffix}{random_token(40)}" if with_mcp else None,
        "publishable": f"pk_test_{suffix}{random_token(40)}",
        "secret": f"sk_test_{suffix}{random_token(40)}",
    }
