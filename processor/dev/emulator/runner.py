"""Run the emulator inside the current event loop (tests, the demo) on a free port of 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

from processor.dev.emulator.app import build_app
from processor.dev.emulator.config import CONTROL_TOKEN_HEADER, EmulatorConfig, Knobs
from processor.dev.emulator.state import EmulatorState
from processor.dev.emulator.webhooks import Attempt, Endpoint
from processor.runtime.serving import free_port, serving


@dataclass
class RunningEmulator:
    """Handle on an emulator started by `running_emulator`: where it is and how to steer it from Python."""

    base_url: str
    api_key: str
    state: EmulatorState

    @property
    def control_token(self) -> str:
        """The per-run token the /_emulator/* control endpoints require."""
        return self.state.config.control_token

    @property
    def control_headers(self) -> dict[str, str]:
        """Headers for an HTTP client of the control endpoints."""
        return {CONTROL_TOKEN_HEADER: self.control_token}

    def add_webhook_endpoint(
        self, url: str, secret: str | None = None, enabled_events: frozenset[str] = frozenset()
    ) -> Endpoint:
        return self.state.add_webhook_endpoint(url, secret, enabled_events)

    def roll_secret(self, endpoint_id: str, expires_in: timedelta, new_secret: str | None = None) -> Endpoint:
        return self.state.deliverer.roll_secret(endpoint_id, expires_in, new_secret)

    def set_knobs(self, **changes: object) -> Knobs:
        return self.state.set_knobs(**changes)

    def advance_clock(self, delta: timedelta) -> int:
        return self.state.advance_clock(delta)

    def attempts(self, event_id: str | None = None) -> list[Attempt]:
        return self.state.deliverer.attempts(event_id=event_id)

    async def wait_for_deliveries(self, within_s: float = 30.0) -> None:
        """Return once every scheduled webhook (with retries) is done; TimeoutError after `within_s`."""
        await self.state.deliverer.wait_idle(within_s)


@asynccontextmanager
async def running_emulator(config: EmulatorConfig | None = None) -> AsyncIterator[RunningEmulator]:
    """Start the emulator with uvicorn in this event loop; stop it (and its deliveries) on exit."""
    config = config or EmulatorConfig()
    if config.port == 0:
        config = replace(config, port=free_port(config.host))
    state = EmulatorState(config)
    async with serving(
        build_app(state), host=config.host, port=config.port, lifespan="on", date_header=False
    ) as base_url:
        yield RunningEmulator(base_url, config.api_keys[0], state)
