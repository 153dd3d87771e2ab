"""One running emulator's parts wired together: clock, store, delivery, lifecycle, faults and knobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from processor.emulator.clock import Clock
from processor.emulator.config import IDEMPOTENCY_WINDOW_HOURS, EmulatorConfig, Knobs
from processor.emulator.faults import Faults
from processor.emulator.sandboxes import Sandboxes
from processor.emulator.store import Store
from processor.emulator.webhooks import Deliverer, Endpoint

logger = logging.getLogger(__name__)


class EmulatorState:
    """Everything one emulator instance holds; the HTTP layers and the Python API both work on this."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.knobs: Knobs = config.knobs
        self.clock = Clock()
        self.store = Store()
        self.rng = random.Random(config.seed)  # knobs only; ids and keys come from `secrets`
        self.public_url = config.public_url or f"http://{config.host}:{config.port}"
        self.deliverer = Deliverer(self.clock, lambda: self.knobs, self.rng, config.delivery_concurrency)
        self.sandboxes = Sandboxes(
            self.store, self.clock, self.deliverer, lambda: self.knobs, lambda: self.public_url
        )
        self.faults = Faults(lambda: self.knobs, self.rng)
        self._ticker: asyncio.Task[None] | None = None
        for spec in config.endpoints:
            self.deliverer.add_endpoint(spec.url, spec.secret)

    def add_webhook_endpoint(
        self, url: str, secret: str | None = None, enabled_events: frozenset[str] = frozenset()
    ) -> Endpoint:
        """Register an endpoint; its `secret` is what the receiver verifies with."""
        return self.deliverer.add_endpoint(url, secret, enabled_events)

    def set_knobs(self, **changes: object) -> Knobs:
        """Change knobs at run time (ValueError on a bad value, nothing changed then)."""
        self.knobs = self.knobs.updated(changes)
        return self.knobs

    def advance_clock(self, delta: timedelta) -> int:
        """Move time forward and apply what falls due (expiring notices, expiry); returns the changes."""
        self.clock.advance(delta)
        return self.tick()

    def tick(self) -> int:
        self.store.forget_idempotency_before(self.clock.now() - timedelta(hours=IDEMPOTENCY_WINDOW_HOURS))
        return self.sandboxes.tick()

    async def start(self) -> None:
        await self.deliverer.start()
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(), name="emulator clock")

    async def stop(self) -> None:
        """Stop the ticker and in-flight deliveries; safe to call twice."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.deliverer.stop()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            try:
                self.tick()
            except Exception:  # a bug here must not stop time for the whole emulator
                logger.exception("emulator tick failed")
