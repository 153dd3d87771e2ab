"""The lifecycle states of a claimable sandbox, as a type the rest of the processor can name."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A lifecycle state; the values are the state ids of statemachine/lifecycle.yaml (checked at load)."""

    UNCLAIMED = "unclaimed"
    CLAIMED = "claimed"
    PENDING_ONBOARDING = "pending_onboarding"
    PENDING_INSTALL = "pending_install"
    INSTALLED = "installed"
    LIVE = "live"
    EXPIRED = "expired"
