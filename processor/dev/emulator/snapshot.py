"""The emulator's Stripe-side state in a JSON file, so a restarted emulator knows the sandboxes and events again.

Kept: sandboxes, the live accounts, replaced onboarding links, every event (the Events APIs list them for
recovery), and the clock's offset. Not kept: idempotency records (a day's window; a retry after a restart
creates anew), delivery attempts, and webhook endpoints with their secrets (whoever starts the emulator
registers them again). The file is written whole to a temporary name and renamed over the old one, so a
crash mid-write leaves the previous snapshot; it is created 0600 and never followed through a symlink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from processor.dev.emulator.store import EventRecord, SandboxRecord

if TYPE_CHECKING:
    from processor.dev.emulator.state import EmulatorState

#: bumped when the shape changes; an unknown version is refused rather than misread
VERSION = 1
_SANDBOX_TIMES = ("created", "expires_at", "link_expires_at", "claimed_at")


def dump(state: EmulatorState) -> bytes:
    """The state as JSON bytes."""
    store = state.store
    data = {
        "version": VERSION,
        "clock_offset_s": state.clock.offset.total_seconds(),
        "sandboxes": [dataclasses.asdict(s) for s in store.sandboxes.values()],
        "replaced_links": store.replaced_links,
        "accounts": store.accounts,
        "events": [dataclasses.asdict(e) for e in store.events],
    }
    return orjson.dumps(data)


def load(state: EmulatorState, raw: bytes) -> None:
    """Put a `dump` back into a fresh state; ValueError if it is not one this version can read."""
    data = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"not an emulator snapshot of version {VERSION}")
    # the parts hold the state's clock and store: both are filled in, never replaced
    state.clock.advance(timedelta(seconds=float(data["clock_offset_s"])) - state.clock.offset)
    store = state.store
    for item in data["sandboxes"]:
        for name in _SANDBOX_TIMES:
            if item.get(name) is not None:
                item[name] = datetime.fromisoformat(item[name])
        store.add_sandbox(SandboxRecord(**item))
    store.replaced_links.update(data["replaced_links"])
    store.accounts.extend(data["accounts"])
    for item in data["events"]:
        item["created"] = datetime.fromisoformat(item["created"])
        store.add_event(EventRecord(**item))


def save(state: EmulatorState, path: Path) -> None:
    """Write the snapshot to `path` atomically (temporary file, then rename), mode 0600."""
    body = dump(state)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def restore(state: EmulatorState, path: Path) -> bool:
    """Load `path` into `state` if it exists; True if it did."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    with os.fdopen(fd, "rb") as handle:
        load(state, handle.read())
    return True
