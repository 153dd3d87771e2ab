"""Replays, DLQ purges and reconcile passes asked for over HTTP run as background jobs of `processor run`'s app:
POST answers 202 with a Location at once, however long the job takes; a process runs a bounded number of jobs
and refuses more; shutdown cancels running jobs and marks them interrupted.

The jobs are held on a gate the test controls: a lock on `dlq_replays` (every replay of the DLQ and every purge
reads it first), taken by the test's own connection, so "the job is still running" needs no timing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette

from processor import constants as c
from processor.db.pool import Database
from processor.dev.emulator.config import EmulatorConfig
from processor.dev.emulator.runner import running_emulator
from processor.eventlog.postgres.log import PostgresEventLog
from processor.operations.dlq import DlqFilter
from processor.operations.jobs import MAX_RUNNING_JOBS, OperatorJobs
from processor.operations.replay import ReplayRequest, list_replay_runs
from processor.runtime.service import build_http_app
from processor.runtime.serving import serving
from processor.settings import Secret, Settings
from processor.stripe_api.client import StripeApi
from tests.support.console_harness import wait_for

TOKEN = "tok_jobs_test_0123456789abcdef"


@dataclasses.dataclass
class Served:
    settings: Settings
    app: Starlette
    log: PostgresEventLog


@pytest_asyncio.fixture
async def app(pg_settings: Settings, database: Database, pg_log: PostgresEventLog) -> AsyncIterator[Served]:
    """`processor run`'s HTTP app (not yet serving) on this test's database and PostgreSQL-table log."""
    async with running_emulator(EmulatorConfig()) as emu:
        settings = dataclasses.replace(
            pg_settings, stripe_api_key=Secret(emu.api_key), stripe_api_base=emu.base_url,
            api_tokens=(Secret(TOKEN),), signing_key=Secret("jobs-signing-key-0123456789"),
            stripe_webhook_secrets=(Secret("whsec_jobs_0123456789"),),
        )
        await pg_log.ensure_topics([settings.topic(c.TOPIC_EVENTS), settings.topic(c.TOPIC_DLQ)])
        async with StripeApi(settings) as stripe:
            yield Served(settings, build_http_app(settings, pg_log, database, stripe), pg_log)


@contextlib.asynccontextmanager
async def client(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(served.app, lifespan="on") as url, httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as http:
        yield http


@contextlib.asynccontextmanager
async def gate(pg_dsn: str, table: str = "dlq_replays") -> AsyncIterator[None]:
    """While open, every job that reads `table` waits (replays of the DLQ and purges read `dlq_replays`, a
    reconcile pass `reconcile_cursors`)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def dead_letter(served: Served, event_id: str) -> str:
    """Publish one dead-lettered record; its coordinate."""
    body = (b'{"id": "%s", "object": "v2.core.event", "type": "v2.core.claimable_sandbox.updated",'
            b' "related_object": {"id": "csb_jobs", "type": "v2.core.claimable_sandbox"}}' % event_id.encode())
    headers = [(c.H_ERROR_CLASS, b"ValidationError"), (c.H_ERROR_MESSAGE, b"a test dead letter"),
               (c.H_ATTEMPTS, b"1"), (c.H_EVENT_ID, event_id.encode())]
    record = await served.log.publish(served.settings.topic(c.TOPIC_DLQ), b"csb_jobs", body, headers)
    return f"{record.partition}:{record.offset}"


async def finished(http: httpx.AsyncClient, location: str) -> dict[str, Any]:
    """The job at `location` once it has ended."""
    state: dict[str, Any] = {}

    async def ended() -> bool:
        answer = await http.get(location)
        assert answer.status_code == 200, answer.text
        state.update(answer.json())
        return bool(state["status"] != "running")

    await wait_for(ended, f"the job at {location} to end")
    return state


async def test_replay_and_purge_answer_202_while_the_job_still_runs(app: Served, pg_dsn: str) -> None:
    """POST /v1/ops/replay and /v1/ops/dlq/purge answer 202 with a Location while their job is held; the job's
    page shows it running, then its result; the run is listed with the others."""
    replayed_one = await dead_letter(app, "evt_jobs_1")
    async with client(app) as http:
        async with gate(pg_dsn):
            started = await http.post("/v1/ops/replay", json={"source": "dlq"})
            assert started.status_code == 202, started.text
            location = started.headers["location"]
            assert location == f"/v1/ops/replays/{started.json()['id']}"
            held = await http.get(location)
            assert (held.status_code, held.json()["status"]) == (200, "running")
        report = await finished(http, location)
        assert (report["status"], report["result"]["replayed"], report["error"]) == ("finished", 1, None)
        listed = (await http.get("/v1/ops/replays")).json()["data"]
        assert [(run["id"], run["status"]) for run in listed] == [(report["id"], "finished")]
        assert (await http.get("/v1/ops/replays/replay-dlq-unknown")).status_code == 404

        purged_one = await dead_letter(app, "evt_jobs_2")
        async with gate(pg_dsn):
            started = await http.post("/v1/ops/dlq/purge", json={"confirm": True, "coordinates": [purged_one]})
            assert started.status_code == 202, started.text
            location = started.headers["location"]
            assert (await http.get(location)).json()["status"] == "running"
        purge = await finished(http, location)
        assert (purge["status"], purge["result"]) == ("finished", {"purged": 1, "deleted_from_log": True})
        open_ones = (await http.get("/v1/ops/dlq")).json()["data"]
        assert open_ones == [] and replayed_one != purged_one


async def test_reconcile_answers_202_and_runs_one_pass_at_a_time(app: Served, pg_dsn: str) -> None:
    """POST /v1/ops/reconcile answers 202 while its pass is held (it used to answer only when the pass, Stripe
    fetches at the key's rate included, had ended); a second POST meanwhile is 409; the job's result is the
    pass's report."""
    async with client(app) as http:
        async with gate(pg_dsn, "reconcile_cursors"):
            started = await http.post("/v1/ops/reconcile", json={"dry_run": True, "age": "0s"})
            assert started.status_code == 202, started.text
            location = started.headers["location"]
            assert location == f"/v1/ops/jobs/{started.json()['id']}"
            assert (await http.get(location)).json()["status"] == "running"
            again = await http.post("/v1/ops/reconcile", json={"dry_run": True})
            assert (again.status_code, again.json()["code"]) == (409, "reconcile_in_progress")
        report = await finished(http, location)
        assert (report["status"], report["kind"], report["error"]) == ("finished", "reconcile", None)
        assert report["result"]["dry_run"] is True and report["result"]["checked"] == 0
        bad = await http.post("/v1/ops/reconcile", json={"age": "soon"})
        assert (bad.status_code, bad.headers["content-type"]) == (400, "application/problem+json")


async def test_jobs_beyond_the_limit_are_refused_not_queued(app: Served, pg_dsn: str) -> None:
    """With MAX_RUNNING_JOBS jobs held, another POST is 429 jobs_busy and the same replay run again is 409;
    once they end, a new job starts."""
    await dead_letter(app, "evt_jobs_3")
    async with client(app) as http:
        async with gate(pg_dsn):
            # dry runs of other selections (a dry run takes the lock of the run it previews)
            held = [await http.post("/v1/ops/replay", json={"source": "dlq", "event_type": f"t{n}",
                                                             "dry_run": True}) for n in range(MAX_RUNNING_JOBS - 1)]
            held.append(await http.post("/v1/ops/replay", json={"source": "dlq"}))
            assert [answer.status_code for answer in held] == [202] * MAX_RUNNING_JOBS
            busy = await http.post("/v1/ops/dlq/purge", json={"confirm": True})
            assert (busy.status_code, busy.headers["content-type"]) == (429, "application/problem+json")
            assert busy.json()["code"] == "jobs_busy" and "try again" in busy.json()["detail"]
            again = await http.post("/v1/ops/replay", json={"source": "dlq"})
            assert (again.status_code, again.json()["code"]) == (409, "replay_in_progress")
            jobs = (await http.get("/v1/ops/jobs")).json()["data"]
            assert sorted(job["status"] for job in jobs) == ["running"] * MAX_RUNNING_JOBS
        for answer in held:
            assert (await finished(http, answer.headers["location"]))["status"] == "finished"
        after = await http.post("/v1/ops/dlq/purge", json={"confirm": True})
        assert after.status_code == 202, after.text
        ended = await finished(http, after.headers["location"])
        assert (ended["status"], ended["result"]["purged"]) == ("finished", 0)  # the replay resolved the record


async def test_shutdown_stops_running_jobs_and_marks_them_interrupted(
    app: Served, pg_dsn: str, database: Database
) -> None:
    """A replay still running when the server shuts down ends, listed as interrupted (not running) in the
    runs every process sees, and the process starts no new job."""
    await dead_letter(app, "evt_jobs_4")
    async with gate(pg_dsn):
        async with client(app) as http:
            started = await http.post("/v1/ops/replay", json={"source": "dlq"})
            assert started.status_code == 202, started.text
            run_id = started.json()["id"]

            async def holds_its_lock() -> bool:
                runs = await list_replay_runs(database, run_id=run_id)
                return bool(runs) and runs[0].status == "running"

            await wait_for(holds_its_lock, "the replay to take its run lock")
        # the server has shut down, the gate is still held: the job did not end by itself
        job = await app.app.state.operator_jobs.get(run_id)
        assert job is not None and job.status == "interrupted"
        assert [run.status for run in await list_replay_runs(database, run_id=run_id)] == ["interrupted"]
        # and so every other replica reads it
        other = OperatorJobs(app.settings, app.log, database, None)
        seen = await other.get(run_id)
        assert seen is not None and (seen.status, seen.error) == ("interrupted", None)
        late = await refused(app)
    assert late == "shutting_down"


async def refused(app: Served) -> str:
    """The code of the error a job started after shutdown raises."""
    from processor.operations.jobs import ShuttingDown
    from processor.operations.replay import ReplayRequest

    try:
        await app.app.state.operator_jobs.start_replay(ReplayRequest("dlq"))
    except ShuttingDown as exc:
        return exc.code
    return "started"


async def test_any_replica_answers_for_a_job_another_runs(app: Served, pg_dsn: str, database: Database) -> None:
    """Behind a load balancer the poll of a job lands on any replica: a second app on the same database shows
    the first one's purge running, then its result, lists it, and refuses a second reconcile pass while the
    first one's runs."""
    async with StripeApi(app.settings) as stripe:
        second = dataclasses.replace(app, app=build_http_app(app.settings, app.log, database, stripe))
        async with client(app) as first_http, client(second) as second_http:
            async with gate(pg_dsn):
                started = await first_http.post("/v1/ops/dlq/purge", json={"confirm": True})
                assert started.status_code == 202, started.text
                location = started.headers["location"]
                seen = await second_http.get(location)
                assert (seen.status_code, seen.json()["status"]) == (200, "running"), seen.text
            ended = await finished(second_http, location)
            assert (ended["status"], ended["result"]) == ("finished", {"purged": 0, "deleted_from_log": True})
            assert [job["id"] for job in (await second_http.get("/v1/ops/jobs")).json()["data"]] == [ended["id"]]
            async with gate(pg_dsn, "reconcile_cursors"):
                started = await first_http.post("/v1/ops/reconcile", json={"dry_run": True, "age": "0s"})
                assert started.status_code == 202, started.text
                again = await second_http.post("/v1/ops/reconcile", json={"dry_run": True})
                assert (again.status_code, again.json()["code"]) == (409, "reconcile_in_progress")
            assert (await finished(second_http, started.headers["location"]))["status"] == "finished"


async def test_a_job_whose_process_is_gone_is_shown_interrupted_and_can_run_again(
    app: Served, database: Database
) -> None:
    """A replica killed mid-job (SIGKILL, a lost machine) never marks its job ended: once its heartbeat is older
    than the limit the job reads as interrupted, and its run id can be started again."""
    jobs = OperatorJobs(app.settings, app.log, database, None, stale_after_s=5)
    async with database.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO operator_jobs (id, kind, params, status, started_at, heartbeat_at)"
            " VALUES ('replay-dlq-gone', 'replay', '{}', 'running', now() - interval '1 hour',"
            " now() - interval '6 seconds')")
    assert await jobs.get("replay-\x00") is None  # no id holds a NUL; asked anyway, the database refused it
    lost = await jobs.get("replay-dlq-gone")
    assert lost is not None and (lost.status, lost.error) == (
        "interrupted", {"code": "process_lost", "message": "the process running this job stopped without ending it"})
    job = await jobs.start_replay(ReplayRequest("dlq"), run_id="replay-dlq-gone")
    assert job.task is not None
    await job.task
    assert (job.status, (await jobs.get("replay-dlq-gone")).status) == ("finished", "finished")  # type: ignore[union-attr]


async def test_a_long_job_keeps_its_heartbeat_and_reads_as_running_elsewhere(
    app: Served, pg_dsn: str, database: Database
) -> None:
    """A job running longer than the heartbeat limit is not taken for lost: its process writes a heartbeat
    while it runs, and another replica still reads it as running."""
    jobs = OperatorJobs(app.settings, app.log, database, None, heartbeat_s=0.2, stale_after_s=2)
    elsewhere = OperatorJobs(app.settings, app.log, database, None, stale_after_s=2)
    async with gate(pg_dsn):
        job = await jobs.start_purge(DlqFilter())
        await asyncio.sleep(3)  # past the limit: without a heartbeat the row would read as lost by now
        seen = await elsewhere.get(job.id)
        assert seen is not None and (seen.status, seen.error) == ("running", None)
    assert job.task is not None
    await job.task
    seen = await elsewhere.get(job.id)
    assert seen is not None and (seen.status, seen.result) == ("finished", {"purged": 0, "deleted_from_log": True})


async def test_one_reconcile_pass_runs_over_all_replicas_and_a_dead_one_does_not_block(
    app: Served, database: Database
) -> None:
    """Two replicas asked for a pass at the same instant could both find none running and both start one: the
    database itself refuses a second running pass. A pass whose process died is ended by the next claim (else
    it would hold the place for ever), and reads as interrupted."""
    async with database.pool.acquire() as conn:
        insert = ("INSERT INTO operator_jobs (id, kind, params, status, started_at, heartbeat_at)"
                  " VALUES ($1, 'reconcile', '{}', 'running', now(), now() - $2::interval)")
        await conn.execute(insert, "reconcile-dead", timedelta(seconds=60))
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, "reconcile-second", timedelta(0))
    async with StripeApi(app.settings) as stripe:
        jobs = OperatorJobs(app.settings, app.log, database, stripe, stale_after_s=30)
        job = await jobs.start_reconcile(age=timedelta(0), dry_run=True, discover=False, limit=None)
        assert job.task is not None
        await job.task
        dead = await jobs.get("reconcile-dead")
        assert job.status == "finished" and dead is not None and (dead.status, dead.error["code"]) == (  # type: ignore[index]
            "interrupted", "process_lost")


async def test_only_the_newest_ended_jobs_are_kept(app: Served, database: Database) -> None:
    """The table keeps the newest `keep` ended jobs (and every running one); older ones are gone for every
    replica."""
    jobs = OperatorJobs(app.settings, app.log, database, None, keep=1)
    started = []
    for _ in range(3):
        job = await jobs.start_purge(DlqFilter())
        assert job.task is not None
        await job.task
        started.append(job.id)
    elsewhere = OperatorJobs(app.settings, app.log, database, None)
    assert [job.id for job in await elsewhere.jobs()] == [started[2], started[1]]
    assert await elsewhere.get(started[0]) is None
