"""Fixtures shared by the emulator's tests: a running emulator (rate limit off) and a client for its API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from processor.dev.emulator import EmulatorConfig, Knobs, RunningEmulator, running_emulator
from tests.support.emulator_client import api_client


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(EmulatorConfig(knobs=Knobs(rate_limit_rps=0))) as emu:
        yield emu


@pytest.fixture
async def api(emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(emulator) as client:
        yield client
