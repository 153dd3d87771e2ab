"""What a fetched `v2.core.claimable_sandbox` object says about the sandbox (ARCHITECTURE §5)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from processor.errors import PoisonEvent
from processor.lifecycle.messages import rfc3339
from processor.lifecycle.state import State

#: `owner_details.app_install_status` of a claimed sandbox → state; None = claimed, no owner details yet
_CLAIMED_BY_INSTALL_STATUS: Mapping[str | None, State] = {
    None: State.CLAIMED,
    "pending_onboarding": State.PENDING_ONBOARDING,
    "pending_install": State.PENDING_INSTALL,
    "installed": State.INSTALLED,
}


class UnknownSandboxStatus(PoisonEvent):
    """The fetched sandbox has a status (or status combination) this processor does not know."""

    code = "unknown_sandbox_status"


def observed_state(sandbox: Mapping[str, Any]) -> State:
    """The lifecycle state of a fetched claimable sandbox; `UnknownSandboxStatus` if it fits no row of §5."""
    status = sandbox.get("status")
    install_status = _install_status(sandbox)
    if status == "unclaimed":
        return State.UNCLAIMED
    if status == "expired":
        return State.EXPIRED
    if status == "claimed" and install_status in _CLAIMED_BY_INSTALL_STATUS:
        return _CLAIMED_BY_INSTALL_STATUS[install_status]
    if status == "live" and install_status == "installed":
        return State.LIVE
    # A new status from Stripe (the API is a preview) must not be guessed into a state: the event is
    # dead-lettered with this message, and replayed once the mapping knows it.
    raise UnknownSandboxStatus(
        f"sandbox {sandbox.get('id')!r} has status {status!r} with app_install_status {install_status!r}"
    )


def stripe_fields(sandbox: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a fetched sandbox that the `sandbox.state` snapshot carries (`stripe` object)."""
    owner = sandbox.get("owner_details") or {}
    details = sandbox.get("sandbox_details") or {}
    return {
        "status": sandbox.get("status"),
        "app_install_status": owner.get("app_install_status"),
        "sandbox_account": details.get("account"),
        "owner_account": owner.get("account"),
        "livemode": sandbox.get("livemode"),
        "created": _timestamp(sandbox.get("created")),
        "claimed_at": _timestamp(sandbox.get("claimed_at")),
        "expires_at": _timestamp(sandbox.get("expires_at")),
    }


def _timestamp(value: object) -> str | None:
    # v2 objects carry RFC 3339 strings; an SDK or test may hand us datetimes instead
    if isinstance(value, datetime):
        return rfc3339(value)
    return None if value is None else str(value)


def _install_status(sandbox: Mapping[str, Any]) -> str | None:
    owner = sandbox.get("owner_details")
    if not owner:
        return None
    value = owner.get("app_install_status")
    return None if value is None else str(value)
