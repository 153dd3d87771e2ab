"""`processor emulator`: options become the config, and the command serves the API on the given port."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from processor.cli.emulator import config_from_args
from processor.cli.main import build_parser
from processor.errors import ConfigError
from processor.runtime.serving import free_port


def test_options_become_config() -> None:
    """Webhook URLs pair with their secrets and knob options land in the knobs."""
    args = build_parser().parse_args(
        [
            "emulator",
            "--port", "9999",
            "--webhook-url", "http://127.0.0.1:8000/webhooks/stripe",
            "--webhook-secret", "whsec_abc",
            "--duplicate-rate", "0.2",
            "--no-delivery",
        ]
    )  # fmt: skip
    config = config_from_args(args, {})
    assert config.port == 9999 and config.endpoints[0].url.endswith("/webhooks/stripe")
    assert config.endpoints[0].secret == "whsec_abc" and "whsec_abc" not in repr(config)
    assert config.knobs.duplicate_rate == 0.2 and config.knobs.delivery_enabled is False


def test_url_without_secret_is_a_config_error() -> None:
    """A webhook URL needs a secret (flag or EMULATOR_WEBHOOK_SECRET); a bad knob is refused."""
    parser = build_parser()
    with pytest.raises(ConfigError):
        config_from_args(parser.parse_args(["emulator", "--webhook-url", "http://x.test/h"]), {})
    env_config = config_from_args(
        parser.parse_args(["emulator", "--webhook-url", "http://x.test/h"]), {"EMULATOR_WEBHOOK_SECRET": "whsec_env"}
    )
    assert env_config.endpoints[0].secret == "whsec_env"
    with pytest.raises(ConfigError):
        config_from_args(parser.parse_args(["emulator", "--duplicate-rate", "3"]), {})


async def test_command_serves_the_api() -> None:
    """The real subcommand starts uvicorn and answers the health check and the authenticated API."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "emulator", "--port", str(port), "--api-key", "sk_test_cli_key_123456",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    health = await client.get("/_emulator/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the emulator did not start")
            events = await client.get(
                "/v2/core/events",
                headers={"Authorization": "Bearer sk_test_cli_key_123456", "Stripe-Version": "2026-04-22.preview"},
            )
        assert health.json()["status"] == "ok" and events.status_code == 200
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
