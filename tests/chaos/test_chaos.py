"""A small run of both chaos scenarios (bench/chaos.py; `make chaos` runs N=1,000): every sandbox ends in
Stripe's state, no delivery answered 200 is lost, transitions and snapshots are complete and current, and no
process dies that the suite did not kill, under crashes, restarts, duplicates, reordering and Stripe errors."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


async def _chaos(scenario: str, sandboxes: int, timeout_s: float) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CHAOS), "--scenario", scenario, "--sandboxes", str(sandboxes), "--min-duration", "45",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output = (await asyncio.wait_for(process.communicate(), timeout_s))[0].decode()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, output
    return output


@pytest.mark.timeout(600)
async def test_chaos_embedded_default() -> None:
    """`processor run` SIGKILLed three times on one data dir, 40 sandboxes: the table passes every check."""
    output = await _chaos("embedded", 40, 540)
    assert "embedded default: N=40" in output and "verdict" in output and "PASS" in output
    assert "faults injected                                3" in output


@pytest.mark.timeout(600)
async def test_chaos_distributed() -> None:
    """Kafka and PostgreSQL restarted, consumers SIGKILLed, a member added and removed during backoff, 40
    sandboxes: the table passes every check."""
    output = await _chaos("distributed", 40, 540)
    assert "distributed: N=40" in output and "PASS" in output
    assert "faults injected                                7" in output
