"""The emulator is safe on a laptop with a browser open: only holders of the per-run token drive it, and
pages from other sites (cross-site posts, DNS rebinding) are refused."""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

import httpx
import pytest

from processor.cli.emulator import config_from_args
from processor.cli.main import build_parser
from processor.dev.emulator import EmulatorConfig, RunningEmulator, running_emulator
from processor.errors import ConfigError
from processor.runtime.serving import free_port
from tests.support.emulator_client import VERSION, api_client

CREATE = {
    "enable_mcp_access": False,
    "prefill": {"email": "jenny@example.com", "country": "DE"},
    "onboarding_link_details": {"refresh_url": "https://platform.example/refresh"},
}
#: the fixed key every emulator used to accept
OLD_FIXED_KEY = "sk_test_emulator_0000000000000000"


async def test_control_endpoints_need_the_run_token(emulator: RunningEmulator) -> None:
    """Without the token (or with a wrong one) nothing is listed or changed; with it, everything works."""
    async with httpx.AsyncClient(base_url=emulator.base_url) as anonymous:
        listing = await anonymous.get("/_emulator/sandboxes")
        changed = await anonymous.post("/_emulator/config", json={"duplicate_rate": 1})
        endpoint = await anonymous.post("/_emulator/webhook_endpoints", json={"url": "http://attacker.example/"},
                                        headers={"X-Emulator-Token": "emutok_" + "x" * 40})
    assert listing.status_code == changed.status_code == endpoint.status_code == 401
    assert "X-Emulator-Token" in listing.json()["error"]["message"]
    assert emulator.state.knobs.duplicate_rate == 0 and emulator.state.deliverer.endpoints() == []
    async with httpx.AsyncClient(base_url=emulator.base_url, headers=emulator.control_headers) as owner:
        assert (await owner.post("/_emulator/config", json={"duplicate_rate": 0.5})).status_code == 200
        assert (await owner.get("/_emulator/sandboxes")).status_code == 200
    assert emulator.state.knobs.duplicate_rate == 0.5


async def test_control_bodies_must_be_json(emulator: RunningEmulator) -> None:
    """text/plain and form bodies (what a cross-site page can send without asking) get 415 and change nothing."""
    async with httpx.AsyncClient(base_url=emulator.base_url, headers=emulator.control_headers) as owner:
        plain = await owner.post("/_emulator/config", content=b'{"duplicate_rate": 1}',
                                 headers={"Content-Type": "text/plain"})
        form = await owner.post("/_emulator/delivery", data={"enabled": "false"})
        empty_json = await owner.post("/_emulator/clock/advance", json={"days": 1})
    assert plain.status_code == form.status_code == 415
    assert emulator.state.knobs.duplicate_rate == 0 and emulator.state.knobs.delivery_enabled is True
    assert empty_json.status_code == 200


async def test_foreign_host_and_origin_are_refused(emulator: RunningEmulator) -> None:
    """DNS rebinding (a foreign Host) and cross-site requests (a foreign Origin) are refused, even with keys."""
    port = urlsplit(emulator.base_url).port
    async with api_client(emulator) as api:
        rebound = await api.get("/_emulator/sandboxes", headers={"Host": f"attacker.example:{port}"})
        rebound_api = await api.get("/v2/core/events", headers={"Host": f"attacker.example:{port}"})
        cross_site = await api.post("/_emulator/config", json={"duplicate_rate": 1},
                                    headers={"Origin": "https://attacker.example"})
        null_origin = await api.post("/_emulator/config", json={"duplicate_rate": 1}, headers={"Origin": "null"})
        own = await api.get("/_emulator/sandboxes", headers={"Host": f"localhost:{port}"})
    assert rebound.status_code == rebound_api.status_code == 400
    assert cross_site.status_code == null_origin.status_code == 403
    assert emulator.state.knobs.duplicate_rate == 0
    assert own.status_code == 200


async def test_onboarding_page_works_from_its_own_origin_only(api: httpx.AsyncClient) -> None:
    """The link's page needs no token (the link is the capability); another site cannot post its buttons."""
    created = (await api.post("/v2/core/claimable_sandboxes", json=CREATE)).json()
    url = created["onboarding_link_details"]["url"]
    parts = urlsplit(url)
    async with httpx.AsyncClient() as browser:
        forged = await browser.post(url, data={"action": "claim_new"}, headers={"Origin": "https://attacker.example"})
        page = await browser.post(url, data={"action": "claim_new"},
                                  headers={"Origin": f"{parts.scheme}://{parts.netloc}"})
    assert forged.status_code == 403
    assert page.status_code == 200 and "Submit account application" in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"


async def test_api_key_is_random_unless_given() -> None:
    """Each emulator makes its own API key; the old fixed key is refused; a given key is used as is."""
    async with running_emulator() as first, running_emulator() as second:
        assert first.api_key != second.api_key and first.api_key.startswith("sk_test_")
        assert first.control_token != second.control_token
        async with httpx.AsyncClient(base_url=first.base_url, headers={"Stripe-Version": VERSION}) as client:
            fixed = await client.get("/v2/core/events", headers={"Authorization": f"Bearer {OLD_FIXED_KEY}"})
            other = await client.get("/v2/core/events", headers={"Authorization": f"Bearer {second.api_key}"})
    assert fixed.status_code == other.status_code == 401
    given = config_from_args(build_parser().parse_args(["emulator", "--api-key", "sk_test_given_123456"]), {})
    assert given.api_keys == ("sk_test_given_123456",)


def test_binding_beyond_loopback_needs_allow_remote() -> None:
    """0.0.0.0 or a LAN address is refused unless --allow-remote is given; loopback names are fine."""
    parser = build_parser()
    for host in ("0.0.0.0", "192.168.1.10", "::"):  # noqa: S104 - the addresses under test
        with pytest.raises(ConfigError, match="allow-remote"):
            config_from_args(parser.parse_args(["emulator", "--host", host]), {})
    remote = config_from_args(parser.parse_args(
        ["emulator", "--host", "0.0.0.0", "--allow-remote", "--allowed-host", "emulator"]), {})  # noqa: S104
    assert remote.allow_remote and remote.allowed_hosts == ("emulator",)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert EmulatorConfig(host=host).host == host


async def test_command_prints_the_token_that_opens_the_control_endpoints() -> None:
    """`processor emulator` prints its control token and random API key; both work, nothing else does."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "emulator", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        printed: dict[str, str] = {}
        async with asyncio.timeout(60):
            while len(printed) < 2:
                line = (await process.stdout.readline()).decode()
                assert line, "the emulator exited before printing its keys"
                label, _, value = line.partition(": ")
                if label in ("emulator API key", "emulator control token"):
                    printed[label] = value.split()[0]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(400):
                try:
                    await client.get("/_emulator/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            token = {"X-Emulator-Token": printed["emulator control token"]}
            config = await client.get("/_emulator/config", headers=token)
            refused = await client.get("/_emulator/config")
            events = await client.get("/v2/core/events", headers={
                "Authorization": f"Bearer {printed['emulator API key']}", "Stripe-Version": VERSION})
        assert config.status_code == 200 and refused.status_code == 401 and events.status_code == 200
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
