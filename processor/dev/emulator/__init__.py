"""A stateful, offline stand-in for Stripe's claimable-sandbox API and its webhooks (a development tool)."""

from processor.dev.emulator.app import build_app
from processor.dev.emulator.config import EmulatorConfig, EndpointSpec, Knobs
from processor.dev.emulator.runner import RunningEmulator, running_emulator
from processor.dev.emulator.state import EmulatorState
from processor.dev.emulator.webhooks import sign

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
