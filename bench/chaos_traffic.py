"""The chaos suite's traffic: sandboxes created and walked down random paths while faults fire at progress marks."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chaos_checks import Evidence, judge
from chaos_rig import Emulator, Proc, ProcessorView


@dataclass(frozen=True)
class RunOptions:
    sandboxes: int
    seed: int
    #: sandboxes' creation spread over at least this long, so a small run still spreads its faults over traffic
    min_duration_s: float
    #: share of Stripe API requests answered 429 or 500
    api_error_rate: float


#: the Dashboard user's steps (emulator control endpoints) of each path of issue 15
PATHS: dict[str, list[tuple[str, dict[str, object]]]] = {
    "new_account_live": [("claim", {"into": "new"}), ("submit_application", {}), ("install_app", {"go_live": True})],
    "existing_account_live": [("claim", {"into": "existing"}), ("install_app", {"go_live": False}), ("go_live", {})],
    "stopped_in_onboarding": [("claim", {"into": "new"})],
    "stopped_before_install": [("claim", {"into": "new"}), ("submit_application", {})],
    "expired": [("expire", {})],
    "unclaimed": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_", "EMULATOR_"))}


class Traffic:
    """Create N sandboxes and walk each down a random path, 16 at a time; faults fire at progress marks."""

    def __init__(self, count: int, seed: int, emulator: Emulator, create: Callable[[int], str],
                 min_duration_s: float = 60.0) -> None:
        self.count, self.emulator, self.create = count, emulator, create
        #: sandboxes start at most this often, so that a small run still spreads its faults over its traffic
        self.spacing_s = min_duration_s / max(1, count)
        self._started = 0.0
        rng = random.Random(seed)
        self.plan_by_index = [rng.choice(list(PATHS)) for _ in range(count)]
        self.delays = [rng.random() * 0.4 for _ in range(count)]
        self.plan: dict[str, str] = {}
        self.done = 0
        self._lock = threading.Lock()

    def _one(self, index: int) -> None:
        time.sleep(max(0.0, self._started + index * self.spacing_s - time.monotonic()))
        sandbox_id = self.create(index)
        path = self.plan_by_index[index]
        with self._lock:
            self.plan[sandbox_id] = path
        for action, body in PATHS[path]:
            time.sleep(self.delays[index])
            self.emulator.control("POST", f"/sandboxes/{sandbox_id}/{action}", body)
        with self._lock:
            self.done += 1

    def run(self, faults: list[tuple[float, str, Callable[[], None]]], fired: list[str]) -> None:
        stop = threading.Event()

        def fault_loop() -> None:
            for mark, name, action in faults:
                while self.done < mark * self.count and not stop.is_set():
                    time.sleep(0.05)
                if stop.is_set():
                    return
                print(f"  [{time.strftime('%H:%M:%S')}] {self.done}/{self.count}: {name}", flush=True)
                action()
                fired.append(name)

        self._started = time.monotonic()
        thread = threading.Thread(target=fault_loop, daemon=True)
        thread.start()
        try:
            with ThreadPoolExecutor(16) as pool:
                for future in [pool.submit(self._one, i) for i in range(self.count)]:
                    future.result()
            thread.join(600)  # faults scheduled late still happen, while the processor drains
        finally:
            stop.set()


def settle(emulator: Emulator, view: ProcessorView, started: float) -> float | None:
    """Seconds from the end of the traffic until every delivery is done and the processor has caught up; None
    if that did not happen in time (the emulator gives up on a delivery after ~3 minutes of failures)."""
    try:
        emulator.wait_deliveries(600)
        view.wait_caught_up(300)
    except RuntimeError as exc:
        print(f"  not quiescent: {exc}", flush=True)
        return None
    return time.monotonic() - started


def deaths(procs: list[Proc]) -> list[str]:
    return [f"{p.name} exited {p.unplanned_death()} (see {p.log_path})"
            for p in procs if p.unplanned_death() is not None]


def stop_all(procs: list[Proc], found: list[str]) -> None:
    for proc in reversed(procs):
        alive = proc.alive()
        code = proc.stop()
        if alive and code not in (0, None) and code != -15:
            found.append(f"{proc.name} exited {code} on SIGTERM (see {proc.log_path})")


def report(title: str, evidence: Evidence) -> bool:
    verdict = judge(evidence)
    print("\n" + verdict.table(title) + "\n", flush=True)
    return verdict.ok


