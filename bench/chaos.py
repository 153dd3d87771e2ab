"""Chaos suite: N sandboxes walked down random paths while the processor's processes, broker and database fail.

    .venv/bin/python bench/chaos.py                                   # both scenarios, N=1,000 (make chaos)
    .venv/bin/python bench/chaos.py --scenario embedded --sandboxes 40

embedded:    `processor run` on a data dir (embedded PostgreSQL, PostgreSQL-table log); sandboxes created through
             POST /v1/sandboxes; the process SIGKILLed three times during the traffic and restarted on the same dir.
distributed: a Kafka broker and a PostgreSQL server of the suite's own, `processor ingress`, two
             `processor consume` members (each with its relay, as the Helm chart runs them) and a separate
             `processor relay`; a consumer SIGKILLed three times, the broker restarted twice (data kept),
             PostgreSQL restarted once, a third member added and removed while partitions are in backoff.
Both: the emulator (its own process, so Stripe's state outlives the crashes) with 20 % duplicate deliveries,
a 2 s reordering window and 15 % API errors (429/500). Each scenario ends with a table; the exit code is 1 if
any check failed (see bench/chaos_checks.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from chaos_checks import Evidence, TopicRecord
from chaos_rig import Proc, ProcessorView, processor_argv, start_emulator, wait_until
from chaos_traffic import RunOptions, Traffic, base_env, deaths, free_port, report, settle, stop_all

WEBHOOK_SECRET = "whsec_chaos_" + "0" * 24
TOPICS = ("sandbox.transitions", "sandbox.state")


# --- embedded default ------------------------------------------------------------------------------------------
def embedded(opts: RunOptions, workdir: Path) -> bool:
    count, seed = opts.sandboxes, opts.seed
    port, emu_port = free_port(), free_port()
    token = "chaos-token-" + os.urandom(8).hex()
    emulator = start_emulator(workdir, emu_port, f"http://127.0.0.1:{port}/webhooks/stripe", WEBHOOK_SECRET, seed,
                              opts.api_error_rate, base_env())
    env = base_env() | {
        "STRIPE_API_KEY": emulator.api_key, "STRIPE_API_BASE": emulator.base_url,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET, "PROCESSOR_API_TOKENS": token, "PROCESSOR_STRIPE_MAX_RPS": "100",
        "PROCESSOR_DATA_DIR": str(workdir / "var"),
    }
    run = Proc("processor-run", processor_argv("run", "--port", str(port), "--reconcile-interval", "0"), env, workdir)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def start() -> None:
        run.start()
        wait_until(lambda: api.get("/healthz").status_code == 200, 180, "processor run")

    def crash() -> None:
        run.kill()
        time.sleep(1.0)
        start()

    def create(index: int) -> str:
        for _ in range(600):
            try:
                answer = api.post("/v1/sandboxes", json={"email": f"chaos{index}@example.com", "country": "US"},
                                  headers={"Idempotency-Key": f"chaos-{seed}-{index}"})
            except httpx.HTTPError:
                time.sleep(0.2)  # down (killed) or restarting: a platform retries with the same key
                continue
            if answer.status_code == 201:
                return str(answer.json()["id"])
            if answer.status_code < 500 and answer.status_code != 429:
                raise RuntimeError(f"POST /v1/sandboxes answered {answer.status_code}: {answer.text}")
            time.sleep(0.2)
        raise RuntimeError(f"sandbox {index} could not be created")

    procs = [emulator.proc, run]
    found: list[str] = []
    try:
        start()
        traffic = Traffic(count, seed, emulator, create, opts.min_duration_s)
        fired: list[str] = []
        traffic.run([(m, f"SIGKILL processor run ({n})", crash) for n, m in enumerate((0.25, 0.5, 0.75), 1)], fired)
        view = ProcessorView(env, api)
        quiescence = settle(emulator, view, time.monotonic())
        found += deaths(procs)
        transitions, snapshots = read_embedded_topics(env)
        evidence = Evidence(
            plan=traffic.plan, truth=emulator.truth(), states=view.states(), delivered=emulator.delivered(),
            processed=view.processed(sorted(traffic.plan)), dead_letters=view.dead_letters(),
            transitions=transitions["sandbox.transitions"], snapshots=snapshots, deaths=found,
            quiescence_s=quiescence, faults=fired)
    finally:
        stop_all(procs, found)
        from processor.db.embedded import stop_embedded_server

        stop_embedded_server(workdir / "var")  # a server left by a crash must not outlive its directory
    return report(f"embedded default: N={count}, seed {seed}", evidence)


def read_embedded_topics(env: Mapping[str, str]) -> tuple[dict[str, list[TopicRecord]], list[TopicRecord]]:
    """The output topics of the PostgreSQL-table log, read as a downstream service in that deployment does:
    through the processor's event-log API, outside any consumer group."""
    import asyncio

    from processor.db.pool import Database
    from processor.eventlog.factory import open_event_log
    from processor.settings import Settings

    settings = Settings.from_env(dict(env))

    async def read() -> dict[str, list[TopicRecord]]:
        found: dict[str, list[TopicRecord]] = {}
        async with Database(settings, max_size=2) as db, open_event_log(settings, db) as log:
            for name in TOPICS:
                records = []
                for tp, end in (await log.end_offsets(settings.topic(name))).items():
                    for r in await log.read(tp, 0, end) if end else []:
                        records.append(TopicRecord(r.partition, r.offset, (r.key or b"").decode(), r.value))
                found[name] = records
        return found

    topics = asyncio.run(read())
    return topics, topics["sandbox.state"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("embedded", "distributed", "both"), default="both")
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--min-duration", type=float, default=60.0, metavar="SECONDS",
                        help="spread the sandboxes' creation over at least this long (default 60)")
    parser.add_argument("--api-error-rate", type=float, default=0.15,
                        help="share of Stripe API requests failing with 429/500 (default 0.15)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) afterwards")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so every process and server the suite started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from chaos_distributed import distributed

    ok = True
    for name, scenario in (("embedded", embedded), ("distributed", distributed)):
        if args.scenario not in (name, "both"):
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        print(f"chaos {name}: N={args.sandboxes}, seed {args.seed}, work dir {workdir}", flush=True)
        passed = False
        try:
            passed = scenario(RunOptions(args.sandboxes, args.seed, args.min_duration, args.api_error_rate), workdir)
        finally:
            if passed and not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            elif not passed:
                print(f"chaos {name}: logs and data kept in {workdir}", flush=True)
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
