"""A stateful, offline stand-in for Stripe's claimable-sandbox API and its webhooks (a development tool)."""

from processor.emulator.app import build_app
from processor.emulator.config import EmulatorConfig, EndpointSpec, Knobs
from processor.emulator.runner import RunningEmulator, running_emulator
from processor.emulator.state import EmulatorState
from processor.emulator.webhooks import sign

__all__ = [
    "EmulatorConfig",
    "EmulatorState",
    "EndpointSpec",
    "Knobs",
    "RunningEmulator",
    "build_app",
    "running_emulator",
    "sign",
]
