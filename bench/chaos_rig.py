"""The chaos suite's rig: processes it starts and kills, the emulator it drives, and what it asks the processor.

Everything about the product goes through its public interfaces: `processor ...` commands, its HTTP API, the
emulator's Stripe API and control endpoints, and the output topics as a downstream service reads them. Only the
infrastructure (Kafka broker, PostgreSQL server) is handled with its own tools.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: the lifecycle state of an emulator sandbox (ARCHITECTURE §5)
_INSTALL_STATES = {None: "claimed", "pending_onboarding": "pending_onboarding",
                   "pending_install": "pending_install", "installed": "installed"}


def lifecycle_state(sandbox: Mapping[str, Any]) -> str:
    status = sandbox["status"]
    if status in ("unclaimed", "expired"):
        return str(status)
    if status == "live":
        return "live"
    return _INSTALL_STATES[(sandbox.get("owner_details") or {}).get("app_install_status")]


class Proc:
    """A `processor ...` (or other) process with its output in a log file; knows whether the suite stopped it."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.planned_stop = False
        self.starts = 0

    def start(self) -> Proc:
        self.planned_stop = False
        self.starts += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n=== start {self.starts}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def unplanned_death(self) -> int | None:
        """The exit code if the process ended without the suite asking it to."""
        if self.process is None or self.planned_stop:
            return None
        return self.process.poll()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        self.planned_stop = True
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(30)

    def stop(self, grace_s: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL after the grace period. Returns the exit code."""
        self.planned_stop = True
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
                return None
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def processor_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "processor", *args]


def wait_until(check: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except (httpx.HTTPError, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Emulator:
    """`processor emulator` in its own process (so it survives the processor's crashes), driven over HTTP."""

    proc: Proc
    base_url: str
    api_key: str
    token: str | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def wait_ready(self) -> None:
        wait_until(lambda: self.http.get(f"{self.base_url}/_emulator/healthz").status_code in (200, 401, 403),
                   60, "the emulator")
        # with the control endpoints locked down, the per-run token is printed at start
        found = re.search(r"emulator control token: (\S+)", self.proc.output())
        self.token = found.group(1) if found else None

    def _headers(self) -> dict[str, str]:
        return {"X-Emulator-Token": self.token} if self.token else {}

    def control(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        answer = self.http.request(method, f"{self.base_url}/_emulator{path}", json=body, headers=self._headers())
        answer.raise_for_status()
        return answer.json()

    def create_sandbox(self, key: str) -> str:
        """POST /v2/core/claimable_sandboxes as a platform would, retrying injected errors with one key."""
        body = {"enable_mcp_access": False, "onboarding_link_details": {"refresh_url": "https://chaos.test/r"},
                "prefill": {"email": "chaos@example.com", "country": "US"}}
        headers = {"Authorization": f"Bearer {self.api_key}", "Stripe-Version": "2026-04-22.preview",
                   "Idempotency-Key": key}
        # A platform retries as long as Stripe lets it: the run injects 429s and 5xx (up to 80 % in the distributed
        # fault phase) and the consumers share the key's rate limit, so a fixed number of tries is not enough.
        deadline = time.monotonic() + 300
        delay = 0.1
        while True:
            answer = self.http.post(f"{self.base_url}/v2/core/claimable_sandboxes", json=body, headers=headers)
            if answer.status_code == 200:
                return str(answer.json()["id"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator kept failing the creation {key}: {answer.status_code} {answer.text}")
            retry_after = answer.headers.get("Retry-After", "")
            time.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else delay)
            delay = min(delay * 2, 2.0)

    def truth(self) -> dict[str, str]:
        """Stripe's view: every sandbox's lifecycle state."""
        return {s["id"]: lifecycle_state(s) for s in self.control("GET", "/sandboxes")["data"]}

    def delivered(self) -> dict[str, str]:
        """Event id -> type of the events some delivery of which was answered 200."""
        attempts = self.control("GET", "/webhook_attempts")["data"]
        return {a["event_id"]: a["event_type"] for a in attempts if a["status_code"] == 200}

    def wait_deliveries(self, timeout_s: float) -> None:
        answer = self.http.post(f"{self.base_url}/_emulator/webhook_attempts/wait", json={"timeout": timeout_s},
                                headers=self._headers(), timeout=timeout_s + 30)
        if answer.status_code != 200:
            raise RuntimeError(f"deliveries still in flight after {timeout_s:.0f}s")


def start_emulator(log_dir: Path, port: int, webhook_url: str, secret: str, seed: int, error_rate: float,
                   env: Mapping[str, str]) -> Emulator:
    api_key = "sk_test_chaos_" + os.urandom(8).hex()
    proc = Proc("emulator", processor_argv(
        "emulator", "--port", str(port), "--api-key", api_key, "--webhook-url", webhook_url,
        "--webhook-secret", secret, "--seed", str(seed), "--duplicate-rate", "0.2", "--reorder-window", "2",
        "--api-error-rate", str(error_rate), "--rate-limit", "100"), env, log_dir).start()
    emulator = Emulator(proc, f"http://127.0.0.1:{port}", api_key)
    emulator.wait_ready()
    # Stripe retries for days; within a run, retry often enough that every crash window is bridged
    emulator.control("POST", "/config", {"max_attempts": 40, "retry_max_s": 5.0, "api_error_statuses": [429, 500]})
    return emulator


def run_cli(env: Mapping[str, str], *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(processor_argv(*args), env=dict(env), capture_output=True, text=True, timeout=timeout_s,
                          check=False)


@dataclass
class ProcessorView:
    """What the processor says, through its CLI (the environment points it at the deployment)."""

    env: Mapping[str, str]
    #: the operator API of `processor run`, when there is one: a faster way to each sandbox's events
    ops: httpx.Client | None = None

    def _every_row(self, *command: str) -> list[dict[str, Any]]:
        """Every row of a listing command, page by page (`--json` prints one page, `next_cursor` the next)."""
        rows: list[dict[str, Any]] = []
        cursor: list[str] = []
        while True:
            done = run_cli(self.env, *command, "--json", "--limit", "1000", *cursor)
            if done.returncode != 0:
                raise RuntimeError(f"processor {' '.join(command)} failed: {done.stderr}")
            page = json.loads(done.stdout)
            rows += page["data"]
            if page["next_cursor"] is None:
                return rows
            cursor = ["--cursor", page["next_cursor"]]

    def states(self) -> dict[str, str]:
        return {row["id"]: row["state"] for row in self._every_row("sandbox", "list")}

    def processed(self, sandbox_ids: list[str]) -> set[str]:
        """Ids of processed events: `processor events list` pages, or each sandbox's `sandbox show` rows."""
        ids: set[str] = set()
        cursor: str | None = None
        while True:
            args = ["events", "list", "--json", "--limit", "1000"] + (["--cursor", cursor] if cursor else [])
            done = run_cli(self.env, *args)
            if done.returncode != 0:
                return self._processed_per_sandbox(sandbox_ids)
            page = json.loads(done.stdout)
            ids |= {row["event_id"] for row in page["data"]}
            cursor = page.get("next_cursor")
            if not cursor:
                return ids

    def _processed_per_sandbox(self, sandbox_ids: list[str]) -> set[str]:
        ids: set[str] = set()
        for sid in sandbox_ids:
            if self.ops is not None:
                answer = self.ops.get(f"/v1/ops/sandboxes/{sid}")
                if answer.status_code == 200:
                    rows = answer.json()["last_events"]
                    if len(rows) < 20:  # the answer's cap: a full page may hide older events, so ask the CLI
                        ids |= {row["event_id"] for row in rows}
                        continue
            done = run_cli(self.env, "sandbox", "show", sid, "--last", "1000")
            if done.returncode == 0:
                ids |= {row["event_id"] for row in json.loads(done.stdout)["last_events"]}
        return ids

    def dead_letters(self) -> dict[str, str]:
        """Dead-lettered event id -> its error class (the reason)."""
        rows = self._every_row("dlq", "list", "--all")
        return {row["event_id"]: row.get("error_class") or "" for row in rows}

    def wait_caught_up(self, timeout_s: float) -> dict[str, Any]:
        done = run_cli(self.env, "status", "--wait-caught-up", "--timeout", str(timeout_s), "--json",
                       timeout_s=timeout_s + 120)
        if done.returncode != 0:
            raise RuntimeError(f"processor status: not caught up: {done.stderr.strip()}")
        return dict(json.loads(done.stdout))
