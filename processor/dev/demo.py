"""`processor demo`: the whole product on one machine in about a minute.

Starts `processor run` on the embedded default with the bundled Stripe emulator (duplicates and reordering
on), creates sandboxes through the sandbox API, walks them down every path through the emulator's Dashboard
stand-in, shows live progress, and ends with a summary that checks every sandbox's state against the
emulator's own. It then leaves work for the operator console: a few claims dead-lettered (Stripe's reads lag
behind the webhook for longer than the consumer retries), next to the sandboxes left waiting in onboarding,
and prints the console's URL and token; with `serve` it keeps running until Ctrl-C so they can be found.
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


#: claims of "left unclaimed" sandboxes the demo lets the consumer dead-letter, for the console's DLQ page
CONSOLE_DEAD_LETTERS = 2
#: how long the emulator's reads lag behind a change meanwhile (far longer than the consumer's not-found retries)
READ_LAG_S = 600.0


async def _leave_dead_letters(api: httpx.AsyncClient, control: httpx.AsyncClient, ids: list[str]) -> list[str]:
    """Claim a few unclaimed sandboxes while Stripe's reads lag: the consumer finds no sandbox after its
    retries and dead-letters the claims (sandbox_not_found); a replay from the console, now that the lag is
    over, moves them on. Returns the sandboxes."""
    chosen = [sid for i, sid in enumerate(ids) if PATHS[i % len(PATHS)] == "left unclaimed"][:CONSOLE_DEAD_LETTERS]
    if not chosen:
        return []
    (await control.post("/_emulator/config", json={"read_lag_s": READ_LAG_S})).raise_for_status()
    try:
        for sid in chosen:
            (await control.post(f"/_emulator/sandboxes/{sid}/claim", json={"into": "new"})).raise_for_status()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = (await api.get("/v1/ops/dlq", params={"error_class": "sandbox_not_found"})).raise_for_status()
            if {e["sandbox_id"] for e in listed.json()["data"]} >= set(chosen):
                break
            await asyncio.sleep(0.5)
    finally:
        (await control.post("/_emulator/config", json={"read_lag_s": 0})).raise_for_status()
    return chosen


def console_hint(info: ServiceInfo, token: str, dead: list[str], serving: bool) -> str:
    """Where the console is, how to sign in, and what the demo left there to find."""
    console = f"{info.base_url}/console/"
    lines = [
        "",
        "operator console",
        "----------------",
        f"open {console} and sign in with this demo's API token: {token}",
        f"  dead letters to replay: {len(dead)} claim(s) Stripe's lagging reads made the consumer give up on"
        f" ({console}dlq)",
        f"  sandboxes left waiting in onboarding: {console}stuck?state=pending_onboarding&older_than=10s",
    ]
    if not serving:
        lines.append("  (`processor demo --serve`, which `make demo` runs, keeps it up after the summary)")
    return "\n".join(lines)


async def _serve_until_interrupted(out: TextIO) -> None:
    print("\nthe console stays up; press Ctrl-C to stop", file=out, flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


#: what runs while a serving demo is up (the console screenshots), given the service and the API token
WhileServing = Callable[[ServiceInfo, str], Awaitable[None]]


async def run_demo(sandboxes: int = 40, out: TextIO = sys.stdout, data_dir: Path | None = None, *,
                   serve: bool = False, while_serving: WhileServing | None = None) -> DemoResult:
    """Run the whole demo and return its result (the CLI prints it); with `serve` print it here and keep the
    processor (and its console) running until Ctrl-C, or until `while_serving` returns."""
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
            ids = await _create_sandboxes(api, control, sandboxes, out)
            mismatches, delivered, final = await _walk_all(api, control, ids, out)
            dead = await _leave_dead_letters(api, control, ids)
            hint = console_hint(info, token, dead, serve)
            if serve:
                published, distinct = await _published_transitions(settings)
                result = DemoResult(sandboxes, final, published, distinct, len(delivered),
                                    len({a["event_id"] for a in delivered}), mismatches, time.monotonic() - started)
                print(summary(result), file=out)
                print(hint, file=out, flush=True)
                await (while_serving(info, token) if while_serving else _serve_until_interrupted(out))
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await service
    if not serve:
        print(hint, file=out)
    published, distinct = await _published_transitions(settings)
    if owned_dir:
        stop_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    return DemoResult(
        sandboxes=sandboxes, final_states=final, transitions_published=published, distinct_transitions=distinct,
        deliveries=len(delivered), distinct_events=len({a["event_id"] for a in delivered}),
        mismatches=mismatches, wall_s=time.monotonic() - started,
    )


async def _create_sandboxes(
    api: httpx.AsyncClient, control: httpx.AsyncClient, sandboxes: int, out: TextIO
) -> list[str]:
    """Turn on the emulator's duplicates and reordering, then create `sandboxes` through the API; their ids."""
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
    return ids


async def _walk_all(
    api: httpx.AsyncClient, control: httpx.AsyncClient, ids: list[str], out: TextIO
) -> tuple[list[str], list[dict[str, Any]], Counter[str]]:
    """Walk every sandbox down a path in the emulator's Dashboard and wait until the deliveries settle: the
    mismatches seen while settling, the deliveries that succeeded, and the final states."""
    print("walking them down every path in the emulator's Dashboard (20% duplicate deliveries, "
          "reordering on) ...", file=out)
    progress = ProgressBar("", out)
    progress.total(len(ids))
    await asyncio.gather(*(_walk(control, sid, PATHS[i % len(PATHS)], i) for i, sid in enumerate(ids)))

    async def deliveries_done() -> bool:
        return bool((await control.post("/_emulator/webhook_attempts/wait", json={"timeout": 0.1})
                     ).status_code == 200)

    mismatches = await _watch(api, control, progress, "settling", until=deliveries_done)
    progress.close()
    attempts = (await control.get("/_emulator/webhook_attempts")).raise_for_status().json()["data"]
    delivered = [a for a in attempts if a["outcome"] == "succeeded"]
    final = Counter((await _states(api)).values())
    return mismatches, delivered, final


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
