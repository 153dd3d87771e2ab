"""An API client for an emulator started in the test, sending what the official SDK sends."""

from __future__ import annotations

import httpx

from processor.dev.emulator import RunningEmulator

#: the first preview version that has claimable sandboxes
VERSION = "2026-04-22.preview"


def api_client(emu: RunningEmulator) -> httpx.AsyncClient:
    """httpx client on the emulator's base URL with its API key, the Stripe-Version header and the control
    token (so the same client drives the Dashboard stand-in under /_emulator)."""
    headers = {"Authorization": f"Bearer {emu.api_key}", "Stripe-Version": VERSION, **emu.control_headers}
    return httpx.AsyncClient(base_url=emu.base_url, headers=headers)
