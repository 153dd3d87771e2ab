"""`processor demo`: the whole product on one machine in about a minute.

Starts `processor run` on the embedded default with the bundled Stripe emulator (duplicates and reordering
on), creates sandboxes through the sandbox API, walks them down every path through the emulator's Dashboard
stand-in, shows live progress, and ends with a summary that checks every sandbox's state against the
emulator's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from processor import constants as c
from processor.db.embedded import stop_embedded_server
from processor.db.pool import Database
from processor.dev.emulator.config import CONTROL_TOKEN_HEADER
from processor.eventlog.postgres.log import PostgresEventLog
from processor.lifecycle import State, observed_state
from processor.operations.progress import ProgressBar
from processor.runtime.service import ServiceInfo, run_service
from processor.runtime.serving import free_port
from processor.settings import Settings

#: how the demo's sandboxes are spread over the paths a real user can take
PATHS = ("new account", "existing account", "expired", "left in onboarding", "left unclaimed")
STATE_ORDER = [s.value for s in State]


@dataclasses.dataclass
class DemoResult:
    sandboxes: int
    final_states: Counter[str]
    transitions_published: int
    distinct_transitions: int
    deliveries: int
    distinct_events: int
    mismatches: list[str]
    wall_s: float

    @property
    def duplicates_absorbed(self) -> int:
        return self.deliveries - self.distinct_events

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.transitions_published >= self.distinct_transitions > 0


async def _walk(control: httpx.AsyncClient, sandbox_id: str, path: str, index: int) -> None:
    """Do what the end user does in the Dashboard for one sandbox."""
    base = f"/_emulator/sandboxes/{sandbox_id}"

    async def step(action: str, body: dict[str, Any] | None = None) -> None:
        response = await control.post(f"{base}/{action}", json=body or {})
        response.raise_for_status()

    if path == "new account":
        await step("claim", {"into": "new"})
        await step("submit_application")
        await step("install_app")
    elif path == "existing account":
        await step("claim", {"into": "existing", "account": f"acct_demo{index:06d}"})
        await step("install_app")
    elif path == "expired":
        await step("expire")
    elif path == "left in onboarding":
        await step("claim", {"into": "new"})


async def _states(api: httpx.AsyncClient) -> dict[str, str]:
    """Every sandbox's state as the processor's API reports it."""
    states: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/sandboxes", params=params)).raise_for_status().json()
        for item in page["data"]:
            states[item["id"]] = item["state"]
        cursor = page.get("next_cursor")
        if not cursor:
            return states


async def _truth(control: httpx.AsyncClient) -> dict[str, str]:
    """Every sandbox's state as the emulator (Stripe) knows it, mapped through the lifecycle table."""
    listing = (await control.get("/_emulator/sandboxes")).raise_for_status().json()
    return {item["id"]: observed_state(item).value for item in listing["data"]}


async def _watch(api: httpx.AsyncClient, control: httpx.AsyncClient, progress: ProgressBar, phase: str,
                 until: Callable[[], Awaitable[bool]] | None = None, timeout_s: float = 180.0) -> list[str]:
    """Redraw progress until ours equals the emulator's for every sandbox (and `until` holds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ours, truth = await _states(api), await _truth(control)
        mismatches = [f"{sid}: processor says {ours.get(sid)}, Stripe says {want}"
                      for sid, want in truth.items() if ours.get(sid) != want]
        states = Counter(ours.values())
        table = "  ".join(f"{s}={states[s]}" for s in STATE_ORDER if states[s])
        progress.update(len(truth) - len(mismatches), f"in step with Stripe | {table} ({phase})")
        finished = until is None or await until()
        if (not mismatches and finished) or time.monotonic() > deadline:
            return mismatches
        await asyncio.sleep(0.5)


async def _published_transitions(settings: Settings) -> tuple[int, int]:
    """(records on sandbox.transitions, distinct transition ids among them)."""
    async with Database(settings, max_size=2) as db:
        pg_log = PostgresEventLog(db.pool)
        topic = settings.topic(c.TOPIC_TRANSITIONS)
        ids: list[str] = []
        for tp, end in (await pg_log.end_offsets(topic)).items():
            for record in await pg_log.read(tp, 0, end):
                ids.append(str(orjson.loads(record.value)["id"]))
    return len(ids), len(set(ids))


async def run_demo(sandboxes: int = 40, out: TextIO = sys.stdout, data_dir: Path | None = None) -> DemoResult:
    """Run the whole demo and return its result (the CLI prints it)."""
    started = time.monotonic()
    owned_dir = data_dir is None
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="processor-demo-"))
    data_dir.chmod(0o755)  # the embedded PostgreSQL runs as an unprivileged user when we are root
    port = free_port()
    settings = Settings(data_dir=data_dir, port=port, public_url=f"http://127.0.0.1:{port}")
    stop = asyncio.Event()
    ready: asyncio.Future[ServiceInfo] = asyncio.get_running_loop().create_future()
    service = asyncio.create_task(run_service(settings, stop, emulator_port=0, on_ready=ready.set_result))
    try:
        info = await asyncio.wait_for(asyncio.shield(ready), 120)
        print(info.banner().replace("  press Ctrl-C to stop", ""), file=out)
        token = info.settings.api_tokens[0].reveal()
        async with httpx.AsyncClient(base_url=info.base_url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as api, \
                httpx.AsyncClient(base_url=info.emulator_url or "", timeout=30,
                                  headers={CONTROL_TOKEN_HEADER: info.emulator_token or ""}) as control:
            # what Stripe does in real life: deliver some events twice and not in order
            (await control.post("/_emulator/config", json={"duplicate_rate": 0.2, "reorder_window_s": 0.5})
             ).raise_for_status()
            print(f"\ncreating {sandboxes} claimable sandboxes through POST /v1/sandboxes ...", file=out)
            ids = []
            for i in range(sandboxes):
                response = await api.post("/v1/sandboxes", headers={"Idempotency-Key": f"demo-{i}"},
                                          json={"email": f"user{i}@example.com", "country": "US"})
                response.raise_for_status()
                ids.append(response.json()["id"])
            print("walking them down every path in the emulator's Dashboard (20% duplicate deliveries, "
                  "reordering on) ...", file=out)
            progress = ProgressBar("", out)
            progress.total(sandboxes)
            await asyncio.gather(*(_walk(control, sid, PATHS[i % len(PATHS)], i) for i, sid in enumerate(ids)))

            async def deliveries_done() -> bool:
                return bool((await control.post("/_emulator/webhook_attempts/wait", json={"timeout": 0.1})
                             ).status_code == 200)

            mismatches = await _watch(api, control, progress, "settling", until=deliveries_done)
            progress.close()
            attempts = (await control.get("/_emulator/webhook_attempts")).raise_for_status().json()["data"]
            delivered = [a for a in attempts if a["outcome"] == "succeeded"]
            final = Counter((await _states(api)).values())
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await service
    published, distinct = await _published_transitions(settings)
    if owned_dir:
        stop_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    return DemoResult(
        sandboxes=sandboxes, final_states=final, transitions_published=published, distinct_transitions=distinct,
        deliveries=len(delivered), distinct_events=len({a["event_id"] for a in delivered}),
        mismatches=mismatches, wall_s=time.monotonic() - started,
    )


def summary(result: DemoResult) -> str:
    lines = ["", "summary", "-------", f"{'final state':<20} sandboxes"]
    lines += [f"{state:<20} {result.final_states[state]:>9}" for state in STATE_ORDER if result.final_states[state]]
    lines += [
        f"transitions published: {result.transitions_published} ({result.distinct_transitions} distinct ids)",
        f"webhook deliveries accepted: {result.deliveries} for {result.distinct_events} events "
        f"({result.duplicates_absorbed} duplicates absorbed)",
        f"wall time: {result.wall_s:.1f} s",
    ]
    if result.ok:
        lines.append(f"OK: all {result.sandboxes} sandboxes are in the state the emulator (Stripe) says they are in.")
    else:
        lines.append(f"FAILED: {len(result.mismatches)} sandboxes disagree with the emulator:")
        lines += [f"  {m}" for m in result.mismatches[:20]]
    return "\n".join(lines)
