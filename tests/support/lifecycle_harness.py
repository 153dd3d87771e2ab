"""Shared pieces of the lifecycle tests: the emulator wired into the real ingress, sandboxes driven down every
path, and checks of what the consumer and relay produced (every message validated against its schema)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from processor import constants as c
from processor.dev.emulator.config import EmulatorConfig, Knobs
from processor.dev.emulator.runner import RunningEmulator, running_emulator
from processor.eventlog.base import EventLog, Record
from processor.ingress.app import build_app
from processor.ingress.envelope import parse_envelope
from processor.lifecycle import State, observed_state
from processor.lifecycle.machine import transitions
from processor.runtime.serving import serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.schemas import validate

WEBHOOK_SECRET = "whsec_test_lifecycle_0123456789abcdef"


@contextlib.asynccontextmanager
async def running_ingress(settings: Settings, log: EventLog) -> AsyncIterator[str]:
    """The real ingress app on a free port, publishing to `log`; yields its webhook URL."""
    async with serving(build_app(settings, log)) as url:
        yield f"{url}/webhooks/stripe"


@dataclass
class Stack:
    """An emulator delivering into the ingress, and settings that point the processor at both."""

    emu: RunningEmulator
    settings: Settings


@contextlib.asynccontextmanager
async def emulator_stack(base: Settings, log: EventLog, knobs: Knobs | None = None) -> AsyncIterator[Stack]:
    """Emulator (rate limit off unless `knobs` say otherwise) -> webhooks -> real ingress -> `log`."""
    config = EmulatorConfig(knobs=knobs or Knobs(rate_limit_rps=0), seed=7, delivery_concurrency=32)
    async with running_emulator(config) as emu:
        settings = replace(
            base,
            stripe_api_key=Secret(emu.api_key),
            stripe_api_base=emu.base_url,
            stripe_max_rps=1000.0,
            stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),),
        )
        async with running_ingress(settings, log) as url:
            emu.add_webhook_endpoint(url, WEBHOOK_SECRET)
            yield Stack(emu, settings)


#: the paths a sandbox takes in the tests: steps of the Dashboard user, by name
PATHS: dict[str, tuple[str, ...]] = {
    "new_account_live": ("claim_new", "submit", "install_live"),
    "existing_account_live": ("claim_existing", "install_only", "go_live"),
    "expired": ("expire",),
    "new_account_pending_install": ("claim_new", "submit"),
    "existing_installed_uninstalled": ("claim_existing", "install_only", "uninstall"),
    "new_account_pending_onboarding": ("claim_new",),
    "unclaimed": (),
}


async def create_sandboxes(api: StripeApi, count: int, tag: str) -> list[str]:
    """Create `count` sandboxes through the Stripe client (deterministic idempotency keys)."""
    params = {
        "enable_mcp_access": False,
        "onboarding_link_details": {"refresh_url": "https://p.test/refresh"},
        "prefill": {"email": "user@p.test", "country": "US"},
    }
    slots = asyncio.Semaphore(32)

    async def one(index: int) -> str:
        async with slots:
            created = await api.create_sandbox(params, idempotency_key=f"{tag}-create-{index}")
        return str(created["id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def step_actions(emu: RunningEmulator) -> dict[str, Callable[[str], object]]:
    """What each step name of PATHS does to a sandbox in the emulator (the Dashboard user's action)."""
    sandboxes = emu.state.sandboxes
    return {
        "claim_new": lambda sid: sandboxes.claim(sid, "new"),
        "claim_existing": lambda sid: sandboxes.claim(sid, "existing"),
        "submit": sandboxes.submit_application,
        "install_live": lambda sid: sandboxes.install_app(sid, True),
        "install_only": lambda sid: sandboxes.install_app(sid, False),
        "go_live": sandboxes.go_live,
        "expire": sandboxes.expire,
        "uninstall": sandboxes.uninstall_app,
    }


def drive(emu: RunningEmulator, sandbox_ids: list[str], seed: int = 1) -> dict[str, str]:
    """Walk each sandbox down a path (round-robin over PATHS), steps of different sandboxes interleaved."""
    names = list(PATHS)
    plan = {sid: names[i % len(names)] for i, sid in enumerate(sandbox_ids)}
    actions = step_actions(emu)
    queues = {sid: list(PATHS[name]) for sid, name in plan.items() if PATHS[name]}
    rng = random.Random(seed)
    while queues:
        sid = rng.choice(sorted(queues))
        actions[queues[sid].pop(0)](sid)
        if not queues[sid]:
            del queues[sid]
    return plan


def expected_states(emu: RunningEmulator, sandbox_ids: list[str]) -> dict[str, State]:
    """What the emulator (Stripe's truth) says each sandbox is now."""
    return {sid: observed_state(emu.state.store.sandboxes[sid].to_api()) for sid in sandbox_ids}


async def read_topic(log: EventLog, topic: str) -> list[Record]:
    """Every record of `topic`, all partitions."""
    records: list[Record] = []
    for tp, end in (await log.end_offsets(topic)).items():
        if end:
            records.extend(await log.read(tp, 0, end))
    return records


async def publish_made(emu: RunningEmulator, log: EventLog, topic: str, after: int = 0) -> tuple[int, int]:
    """The events the emulator made after its event number `after` into `log`, in the order they happened, as
    the ingress writes them (webhooks need not be delivered); returns how many, and the last event number."""
    records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
    last = after
    for event in emu.state.store.events:
        if event.seq <= after:
            continue
        last = event.seq
        body = orjson.dumps(event.v1_payload if event.v1_payload is not None else event.notification())
        envelope = parse_envelope(body)
        records.append((topic, envelope.key.encode(), body, [(c.H_EVENT_ID, envelope.id.encode())]))
    await log.publish_many(records)
    return len(records), last


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


async def db_states(conn: asyncpg.Connection[Any]) -> dict[str, State]:
    return {r["id"]: State(r["state"]) for r in await conn.fetch("SELECT id, state FROM sandboxes")}


async def settled(dsn: str, expected: dict[str, State]) -> bool:
    """Every sandbox is in its expected state in the database and the outbox is fully published."""
    conn = await asyncpg.connect(dsn)
    try:
        states = await db_states(conn)
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return pending == 0 and all(states.get(sid) == state for sid, state in expected.items())


@dataclass
class Published:
    """What the relay published, validated: transitions by id (with raw copies) and latest snapshots."""

    transitions: dict[str, dict[str, Any]]
    raw_transition_count: int
    snapshots: dict[str, dict[str, Any]]


async def published(log: EventLog, settings: Settings) -> Published:
    """Read sandbox.transitions and sandbox.state, validate every message, and check re-publishes are identical."""
    by_id: dict[str, dict[str, Any]] = {}
    raw = await read_topic(log, settings.topic(c.TOPIC_TRANSITIONS))
    for record in raw:
        value = json.loads(record.value)
        validate("sandbox-transition", value)
        assert record.key == value["subject"].encode()
        assert record.header("content-type") == "application/cloudevents+json"
        if value["id"] in by_id:
            assert by_id[value["id"]] == value, f"re-published {value['id']} differs"
        by_id[value["id"]] = value
    snapshots: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}
    for record in await read_topic(log, settings.topic(c.TOPIC_STATE)):
        value = json.loads(record.value)
        validate("sandbox-state", value)
        assert record.header(c.H_STATE_VERSION) == str(value["version"])
        previous = snapshots.get(value["sandbox_id"])
        if previous is None or previous["version"] <= value["version"]:
            snapshots[value["sandbox_id"]] = value
        last[value["sandbox_id"]] = value
    # what a compacted topic keeps is the last record per key: it must be the newest snapshot
    assert {sid: v["version"] for sid, v in last.items()} == {sid: v["version"] for sid, v in snapshots.items()}
    return Published(by_id, len(raw), snapshots)


def check_paths(pub: Published, expected: dict[str, State]) -> None:
    """Per sandbox: one gap-free path of allowed transitions from unclaimed to its expected state."""
    allowed = transitions()
    paths: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in pub.transitions.values():
        paths[message["subject"]].append(message["data"])
    assert set(paths) == set(expected), "a sandbox has no published transitions, or an unknown one has"
    for sid, state in expected.items():
        steps = sorted(paths[sid], key=lambda d: d["sequence"])
        assert [d["sequence"] for d in steps] == list(range(1, len(steps) + 1)), f"gap in {sid}"
        assert steps[0]["from_state"] is None and steps[0]["to_state"] == State.UNCLAIMED
        for before, after in itertools.pairwise(steps):
            assert after["from_state"] == before["to_state"]
            assert (State(after["from_state"]), State(after["to_state"])) in allowed
        assert steps[-1]["to_state"] == state, f"{sid} ends in {steps[-1]['to_state']}, Stripe says {state}"
        assert steps[-1]["observed"] is True
        assert pub.snapshots[sid]["state"] == state
