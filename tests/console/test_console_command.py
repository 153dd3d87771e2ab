"""`processor console`: the console alone, as the distributed deployment runs it, in a real process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid

import httpx

from processor.runtime.serving import free_port
from tests.support.console_harness import OPERATOR_TOKEN


async def test_processor_console_serves_the_console_on_the_shared_database(pg_dsn: str) -> None:
    """`processor console` on the database and log the consumers use: nothing without a session, the sign-in
    form exchanges the operator token for a session, the overview answers, and SIGTERM stops it cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    env.update(PROCESSOR_DATABASE_URL=pg_dsn, PROCESSOR_TOPIC_PREFIX=f"cc{uuid.uuid4().hex[:8]}.",
               PROCESSOR_API_TOKENS=OPERATOR_TOKEN, PROCESSOR_SIGNING_KEY="console-command-signing-key-0123")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "processor", "console", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        assert f"operator console on http://127.0.0.1:{port}/console/" in line, line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200
            refused = await client.get("/console/")
            assert refused.status_code == 303 and refused.headers["location"] == "/console/signin"
            form = await client.get("/console/signin")
            assert form.status_code == 200
            assert form.headers["content-security-policy"].startswith("default-src 'none'")
            match = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text)
            assert match is not None
            signed_in = await client.post("/console/signin", data={"csrf": match.group(1), "token": OPERATOR_TOKEN})
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console/"
            overview = await client.get("/console/")
            assert overview.status_code == 200
            assert '<span class="figure" id="total-sandboxes">0</span>' in overview.text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
    assert proc.returncode == 0, rest
