"""The mapping from a fetched v2.core.claimable_sandbox object to a lifecycle state (ARCHITECTURE §5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processor.errors import PoisonEvent
from processor.lifecycle import State, UnknownSandboxStatus, observed_state, stripe_fields


def sandbox(status: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A claimable sandbox as GET /v2/core/claimable_sandboxes/{id} returns it."""
    return {
        "id": "clmsbx_test_61THl3VA5Zt5cTqbP16T9R4DRrSQbEWmWeLUx7WmOR8K",
        "object": "v2.core.claimable_sandbox",
        "channel": "public",
        "claimed_at": None if status == "unclaimed" else "2025-01-02T00:00:00.000Z",
        "created": "2025-01-01T00:00:00.000Z",
        "expires_at": "2025-03-01T00:00:00.000Z",
        "owner_details": owner,
        "sandbox_details": {"account": "acct_1RzPFWRlMpFp5RCK", "api_keys": None},
        "status": status,
        "livemode": False,
    }


@pytest.mark.parametrize(
    ("status", "owner", "expected"),
    [
        ("unclaimed", None, State.UNCLAIMED),
        ("expired", None, State.EXPIRED),
        ("claimed", None, State.CLAIMED),
        ("claimed", {"account": None, "app_install_status": None}, State.CLAIMED),
        ("claimed", {"account": None, "app_install_status": "pending_onboarding"}, State.PENDING_ONBOARDING),
        ("claimed", {"account": None, "app_install_status": "pending_install"}, State.PENDING_INSTALL),
        ("claimed", {"account": "acct_owner", "app_install_status": "installed"}, State.INSTALLED),
        ("live", {"account": "acct_owner", "app_install_status": "installed"}, State.LIVE),
    ],
)
def test_fetched_sandbox_maps_to_its_state(
    status: str, owner: dict[str, Any] | None, expected: State
) -> None:
    """Each row of the §5 table gives its lifecycle state."""
    assert observed_state(sandbox(status, owner)) is expected


@pytest.mark.parametrize(
    ("status", "owner"),
    [
        ("deleted", None),  # a status this processor does not know yet
        (None, None),
        ("claimed", {"app_install_status": "uninstalled"}),
        ("live", None),  # live without the app installed fits no row
        ("live", {"app_install_status": "pending_install"}),
    ],
)
def test_unknown_status_is_a_poison_event(status: Any, owner: dict[str, Any] | None) -> None:
    """A status combination outside the table is never guessed into a state: it is dead-lettered."""
    with pytest.raises(UnknownSandboxStatus) as raised:
        observed_state(sandbox(status, owner))
    assert isinstance(raised.value, PoisonEvent) and not raised.value.retriable
    assert repr(status) in str(raised.value)


def test_stripe_fields_copy_the_snapshot_fields() -> None:
    """The snapshot's stripe object carries status, install status, accounts and timestamps."""
    fields = stripe_fields(sandbox("live", {"account": "acct_owner", "app_install_status": "installed"}))
    assert fields == {
        "status": "live",
        "app_install_status": "installed",
        "sandbox_account": "acct_1RzPFWRlMpFp5RCK",
        "owner_account": "acct_owner",
        "livemode": False,
        "created": "2025-01-01T00:00:00.000Z",
        "claimed_at": "2025-01-02T00:00:00.000Z",
        "expires_at": "2025-03-01T00:00:00.000Z",
    }


def test_stripe_fields_accept_datetimes() -> None:
    """Timestamps given as datetimes (SDK objects) become RFC 3339 UTC strings."""
    raw = sandbox("unclaimed") | {"created": datetime(2025, 1, 1, 12, 30, tzinfo=UTC)}
    assert stripe_fields(raw)["created"] == "2025-01-01T12:30:00.000Z"
