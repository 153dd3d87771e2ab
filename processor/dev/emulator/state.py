"""One running emulator's parts wired together: clock, store, delivery, lifecycle, faults and knobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from processor.dev.emulator import snapshot
from processor.dev.emulator.clock import Clock
from processor.dev.emulator.config import IDEMPOTENCY_WINDOW_HOURS, EmulatorConfig, Knobs
from processor.dev.emulator.faults import Faults
from processor.dev.emulator.sandboxes import Sandboxes
from processor.dev.emulator.store import Store
from processor.dev.emulator.webhooks import Deliverer, Endpoint

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
        self._saver: asyncio.Task[None] | None = None
        for spec in config.endpoints:
            self.deliverer.add_endpoint(spec.url, spec.secret)
        if config.state_file is not None and snapshot.restore(self, config.state_file):
            logger.info(
                "emulator state loaded from %s: %d sandboxes, %d events",
                config.state_file,
                len(self.store.sandboxes),
                len(self.store.events),
            )

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
        if self.config.state_file is not None and self._saver is None:
            self._saver = asyncio.get_running_loop().create_task(self._save_forever(), name="emulator snapshots")

    async def stop(self) -> None:
        """Stop the ticker and in-flight deliveries, and write the state file if there is one; safe to call
        twice."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
            self.save()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.deliverer.stop()

    def save(self) -> None:
        """Write the state file now (no-op without one)."""
        if self.config.state_file is not None:
            snapshot.save(self, self.config.state_file)

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval_s)
            try:
                self.save()
            except OSError:  # a full disk must not stop the emulator; the next snapshot tries again
                logger.exception("emulator snapshot failed")

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            try:
                self.tick()
            except Exception:  # a bug here must not stop time for the whole emulator
                logger.exception("emulator tick failed")
