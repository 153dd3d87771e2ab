"""The sandbox lifecycle: the statechart, what a fetched sandbox says, and monotonic progress through it."""

from processor.lifecycle.decision import Decision, Outcome, Step, decide
from processor.lifecycle.observation import UnknownSandboxStatus, observed_state, stripe_fields
from processor.lifecycle.state import State

__all__ = [
    "Decision",
    "Outcome",
    "State",
    "Step",
    "UnknownSandboxStatus",
    "decide",
    "observed_state",
    "stripe_fields",
]
