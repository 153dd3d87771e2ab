"""A raw-socket fuzzer for `processor run`: mutated webhook deliveries, API and refresh-URL requests.

Each webhook case is built from a seeded random generator: framing (Content-Length, chunked with random chunk
sizes, trailers, wrong lengths), headers (duplicates, huge, many, odd case, Upgrade, Expect), signatures
(valid, wrong secret, flipped digit, missing, malformed, old or future timestamp, in a trailer only) and
bodies (valid events of known and random types, truncated, garbage). An oracle of its own (hashlib HMAC,
not the processor's code) says which requests are validly signed; the run then checks:

- every validly signed request got 200 and nothing else did (so 200s == validly signed sent);
- the event log grew by exactly one record per 200 (end offsets read through the event log's API);
- no 5xx other than 503 (documented: log unavailable or too many bodies in flight), and none in the API;
- no traceback in the processor's output; RSS within 2x of its start; /healthz answering throughout.

`run_fuzz` is what the bounded test and `make fuzz` call; `python tests/fuzz/fuzzer.py --requests N` runs it
on its own (with an embedded PostgreSQL of its own when PROCESSOR_DATABASE_URL is unset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import asyncpg

from processor import constants as c
from processor.eventlog.factory import open_event_log
from processor.runtime.serving import free_port
from processor.settings import Secret, Settings

KNOWN_TYPES = (
    "v2.core.claimable_sandbox.claimed", "v2.core.claimable_sandbox.updated", "account.application.authorized")
#: answers that are never a defect: 503 is documented (log unavailable, too many bodies in flight)
DOCUMENTED_5XX = {503}


def oracle_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Stripe's v1 scheme, written here independently of processor.ingress.signature."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


class Case(NamedTuple):
    raw: bytes
    valid: bool  # the oracle: validly signed, well framed, a readable event -> must get 200, else must not
    kind: str
    #: the request is left incomplete on purpose: the client gives up after this many seconds
    give_up_s: float | None = None


def _event(rng: random.Random, serial: int) -> bytes:
    event_type = rng.choice(KNOWN_TYPES) if rng.random() < 0.7 else f"fuzz.{rng.getrandbits(32):x}"
    if event_type.startswith("v2.") or rng.random() < 0.3:
        event = {"id": f"evt_fz{serial}_{rng.getrandbits(40):x}", "object": "v2.core.event", "type": event_type,
                 "created": "2026-05-01T12:00:00.000Z", "livemode": False, "context": "acct_fuzz",
                 "related_object": {"id": f"csb_fz{rng.randrange(50)}", "type": "v2.core.claimable_sandbox",
                                    "url": "/v2/core/claimable_sandboxes/x"}}
    else:
        event = {"id": f"evt_fz{serial}_{rng.getrandbits(40):x}", "object": "event", "type": event_type,
                 "account": f"acct_fz{rng.randrange(50)}", "data": {"object": {"id": "ca_1"}}}
    return json.dumps(event, separators=(",", ":") if rng.random() < 0.5 else (", ", ": ")).encode()


def _signature(rng: random.Random, secret: str, body: bytes, now: int) -> tuple[str | None, bool]:
    """A Stripe-Signature value (None: no header) and whether it is valid."""
    roll = rng.random()
    ts = now - rng.randrange(0, 200)
    good = f"t={ts},v1={oracle_signature(secret, ts, body)}"
    if roll < 0.45:
        return (good if rng.random() < 0.8 else f"t={ts},v0=ab,v1=00,v1={oracle_signature(secret, ts, body)}"), True
    if roll < 0.52:
        return None, False
    if roll < 0.58:
        return f"t={ts},v1={oracle_signature('whsec_wrong', ts, body)}", False
    if roll < 0.64:
        sig = oracle_signature(secret, ts, body)
        i = rng.randrange(64)
        return f"t={ts},v1={sig[:i]}{'0' if sig[i] != '0' else '1'}{sig[i + 1:]}", False
    if roll < 0.70:
        old = now - rng.choice((301, 400, 10**6))
        return f"t={old},v1={oracle_signature(secret, old, body)}", False
    if roll < 0.76:
        future = now + rng.choice((320, 4000, 10**9))  # 320: the server's clock reads a little later than ours
        return f"t={future},v1={oracle_signature(secret, future, body)}", False
    junk = rng.choice(["t=", "v1=", "t=abc,v1=00", "t=1" + "0" * 5000 + ",v1=ab", "garbage", ",,,", "t=-5,v1=xx",
                       f"t={ts}", "\u00e9t=1".encode().decode("latin-1"), "t=1,v1=" + "a" * 10000])
    return junk, False


def _frame_body(rng: random.Random, body: bytes) -> tuple[list[bytes], bytes, str]:
    """Framing headers, the framed body, and a name, for a framing that delivers `body` intact."""
    if rng.random() < 0.75:
        length = str(len(body)).encode()
        if rng.random() < 0.05:
            length = b"0" * rng.choice((3, 4400)) + length  # leading zeros: still this length
        return [b"Content-Length: " + length], body, "content-length"
    chunks, rest = [], body
    while rest:
        size = rng.randint(1, max(1, len(rest)))
        chunks.append(b"%x\r\n%s\r\n" % (size, rest[:size]))
        rest = rest[size:]
    trailer = b""
    if rng.random() < 0.3:
        trailer = b"Stripe-Signature: t=1,v1=" + b"0" * 64 + b"\r\n"  # never valid, must never count
    return [b"Transfer-Encoding: chunked"], b"".join(chunks) + b"0\r\n" + trailer + b"\r\n", "chunked"


def _recase(rng: random.Random, header: bytes) -> bytes:
    name, sep, value = header.partition(b":")
    return (name.lower() if rng.random() < 0.5 else name.upper()) + sep + value


def make_case(rng: random.Random, secret: str, serial: int, now: int) -> Case:
    """One webhook request and the oracle's verdict on it."""
    body = _event(rng, serial)
    signature, signed = _signature(rng, secret, body, now)
    valid = signed
    headers = [b"Host: fuzz", b"Content-Type: application/json", b"Connection: close"]
    if signature is not None:
        headers.append(b"Stripe-Signature: " + signature.encode("latin-1"))
    framing, framed, kind = _frame_body(rng, body)
    give_up = None
    roll = rng.random()
    if roll < 0.04:  # the body is changed after signing
        framed_body = body[: rng.randrange(len(body))] if rng.random() < 0.5 else b"x" + body
        framing, framed, kind = _frame_body(rng, framed_body)
        valid, kind = False, "tampered-body"
    elif roll < 0.06:  # a Content-Length shorter than the body: what it covers fails the signature
        framing, framed, kind = [b"Content-Length: %d" % (len(body) - 1)], body, "short-length"
        valid = False
    elif roll < 0.065:  # longer than the body: the client stops waiting
        framing, framed, kind, give_up = [b"Content-Length: %d" % (len(body) + 10)], body, "long-length", 0.5
        valid = False
    elif roll < 0.08:
        framing = [*framing, b"Content-Length: 5"] if kind == "chunked" else [*framing, b"Content-Length: 1"]
        valid, kind = False, "conflicting-framing"
    elif roll < 0.10:
        headers += [b"X-Pad-%d: %s" % (i, b"p" * rng.randrange(200)) for i in range(rng.choice((10, 70, 300)))]
        valid, kind = valid and len(headers) + len(framing) <= 64, "many-headers"
    elif roll < 0.11:
        headers.append(b"X-Huge: " + b"h" * rng.choice((1000, 20_000, 300_000)))
        valid, kind = valid and len(headers[-1]) < 10_000, "huge-header"
    elif roll < 0.13:
        headers += [b"Connection: Upgrade", b"Upgrade: websocket"] if rng.random() < 0.5 else [b"Expect: 100-continue"]
        kind = "upgrade-or-expect"
        valid = valid and b"Upgrade: websocket" not in headers  # an upgrading request's body is not read
    elif roll < 0.15 and signature is not None:
        headers.append(b"Stripe-Signature: t=1,v1=" + b"0" * 64)  # two headers: ambiguous, refused
        valid, kind = False, "second-signature"
    elif roll < 0.16:
        headers = [_recase(rng, h) for h in headers]
        kind = "header-case"
    elif roll < 0.17:
        headers.append(rng.choice([b"Bad Header: x", b"X-Nul: a\x00b", b": empty", b"X-Bad\x7f: y"]))
        valid, kind = False, "bad-header"
    request_line = b"POST /webhooks/stripe HTTP/1.1"
    if rng.random() < 0.02:
        request_line = rng.choice([b"POST /webhooks/%73tripe HTTP/1.1", b"PUT /webhooks/stripe HTTP/1.1",
                                   b"POST /webhooks/stripe?" + b"q" * 20000 + b" HTTP/1.1",
                                   b"POST /webhooks/stripe HTTP/9.9", b"POST  /webhooks/stripe HTTP/1.1"])
        # llhttp takes a doubled space as one; every other variant is refused, unrouted or not POST
        valid, kind = valid and request_line.startswith(b"POST  /"), "request-line"
    raw = request_line + b"\r\n" + b"".join(h + b"\r\n" for h in [*headers, *framing]) + b"\r\n" + framed
    return Case(raw, valid, kind, give_up)


def api_case(rng: random.Random, token: str) -> tuple[bytes, str]:
    """A GET or POST of the sandbox, operator or refresh API with hostile values."""
    nasty = ["%00", "a%00b", "%0a", "%7f", "9" * 20, "9" * 5000, "-1", "0", "%ff%fe", "%C3%A9", "..%2F..%2F",
             "csb_" + "x" * 3000, "%25", "%2F", "'", "\"", "\\", "%F0%9F%98%80", "1e9", "", "null", "[]", "a" * 10]
    v = rng.choice(nasty)
    w = rng.choice(nasty)
    target, body = rng.choice([
        (f"/v1/sandboxes/{v}", None), (f"/v1/sandboxes?limit={v}&cursor={w}", None),
        (f"/v1/sandboxes?state={v}", None), (f"/v1/ops/sandboxes?after={v}&limit={w}", None),
        (f"/v1/ops/sandboxes/{v}", None), (f"/v1/ops/dlq/{v}:{w}", None), (f"/v1/ops/dlq?limit={v}", None),
        (f"/v1/ops/sandboxes?stuck_for={v}", None), (f"/sandboxes/{v}/onboarding?sig={w}", None),
        ("/v1/ops/replay", json.dumps({"source": "offsets", "offsets": f"{v}:{w}-", "dry_run": True})),
        ("/v1/ops/replay", json.dumps({"source": "sandbox", "sandbox_id": v.replace("%00", "\0"), "dry_run": True})),
        ("/v1/ops/replay", json.dumps({"source": "dlq", "since": v, "dry_run": True})),
        ("/v1/ops/dlq/purge", json.dumps({"confirm": True, "coordinates": [f"{v}:{w}"], "sandbox_id": "\u0000"})),
        ("/v1/ops/reconcile", json.dumps({"age": v, "limit": w, "dry_run": True})),
    ])
    auth = f"Authorization: Bearer {token}\r\n".encode()
    if body is None:
        return b"GET %s HTTP/1.1\r\nHost: fuzz\r\n%sConnection: close\r\n\r\n" % (target.encode(), auth), target
    data = body.encode()
    return (b"POST %s HTTP/1.1\r\nHost: fuzz\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (target.encode(), auth, len(data), data)), target


async def send(address: tuple[str, int], raw: bytes, give_up_s: float | None = None) -> int | None:
    """Send one request on a new connection; the answer's status, or None if the server closed without one
    or the exchange outlasted its deadline (a stalled server shows up as None answers, never as a hung run)."""
    try:
        async with asyncio.timeout((give_up_s or 30) + 30):
            return await _exchange(address, raw, give_up_s)
    except TimeoutError:
        return None


async def _exchange(address: tuple[str, int], raw: bytes, give_up_s: float | None) -> int | None:
    try:
        reader, writer = await asyncio.open_connection(*address)
    except OSError:
        return -1
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(raw)
            await writer.drain()
        data = b""
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            async with asyncio.timeout(give_up_s or 30):
                data = await reader.readuntil(b"\r\n")
                while data.startswith(b"HTTP/1.1 100 "):  # an interim answer to Expect: 100-continue
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # its header lines
                    data = await reader.readuntil(b"\r\n")
        return int(data[9:12]) if data.startswith(b"HTTP/1.") and data[9:12].isdigit() else None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class FuzzReport:
    requests: int = 0
    valid_sent: int = 0
    ok: int = 0
    #: validly signed but answered 503 (documented: Stripe retries them)
    deferred: int = 0
    statuses: Counter[int | None] = field(default_factory=Counter)
    oracle_mismatches: list[str] = field(default_factory=list)
    unexpected_5xx: list[str] = field(default_factory=list)
    records_added: int = -1
    api_requests: int = 0
    api_5xx: list[str] = field(default_factory=list)
    rss_start: int = 0
    rss_max: int = 0
    health_failures: int = 0
    health_answers: Counter[int | None] = field(default_factory=Counter)
    health_checks: int = 0
    health_slowest_s: float = 0.0
    tracebacks: int = 0
    seconds: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.ok + self.deferred != self.valid_sent or self.oracle_mismatches:
            found.append(f"200s {self.ok} != validly signed {self.valid_sent}: {self.oracle_mismatches[:10]}")
        # a 503 for a publish that timed out may still have been written (Stripe retries; the consumer dedupes)
        if not self.ok <= self.records_added <= self.ok + self.deferred:
            found.append(f"log grew by {self.records_added} records for {self.ok} answers 200 "
                         f"and {self.deferred} answers 503")
        if self.unexpected_5xx or self.api_5xx:
            found.append(f"unexpected 5xx: {(self.unexpected_5xx + self.api_5xx)[:10]}")
        if self.tracebacks:
            found.append(f"{self.tracebacks} tracebacks in the processor's output")
        if self.rss_max > 2 * self.rss_start:
            found.append(f"RSS grew from {self.rss_start} to {self.rss_max}")
        if self.health_failures:
            found.append(f"/healthz failed {self.health_failures} of {self.health_checks} times")
        return found

    def summary(self) -> str:
        return (f"{self.requests} webhook requests ({self.valid_sent} validly signed, {self.ok} answered 200), "
                f"{self.deferred} validly signed answered 503, {self.api_requests} API requests, "
                f"{self.seconds:.0f} s; statuses {dict(self.statuses)}; log "
                f"records added {self.records_added}; RSS {self.rss_start >> 20} -> max {self.rss_max >> 20} MiB; "
                f"/healthz {self.health_checks - self.health_failures}/{self.health_checks} ok "
                f"{dict(self.health_answers)}, slowest {self.health_slowest_s:.2f} s; "
                f"tracebacks {self.tracebacks}")


async def _record_count(settings: Settings) -> int:
    async with open_event_log(settings) as log_:
        ends = await log_.end_offsets(settings.topic(c.TOPIC_EVENTS))
    return sum(ends.values())


async def _watch_health(address: tuple[str, int], pid: int, report: FuzzReport, stop: asyncio.Event) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        report.health_checks += 1
        asked = time.monotonic()
        try:
            async with asyncio.timeout(10):
                answer = await send(address, request)
        except TimeoutError:
            answer = None
        report.health_answers[answer] += 1
        report.health_slowest_s = max(report.health_slowest_s, time.monotonic() - asked)
        report.health_failures += answer != 200
        try:
            report.rss_max = max(report.rss_max, rss_bytes(pid))
        except FileNotFoundError:  # the processor is gone: every later check would fail too
            report.health_failures += 1
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


async def start_processor(data_dir: Path, database_url: str, output: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`processor run` on a free port against `database_url`, its output going to `output`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    env["PROCESSOR_DATABASE_URL"] = database_url
    with output.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "processor", "run", "--data-dir", str(data_dir), "--port", str(port),
            "--emulator-port", "0", "--reconcile-interval", "0", stdout=sink, stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    async with asyncio.timeout(120):
        while "press Ctrl-C" not in (text := await asyncio.to_thread(output.read_text, errors="replace")):
            if proc.returncode is not None:
                raise RuntimeError("processor run exited early:\n" + text)
            await asyncio.sleep(0.2)
    return proc, port


async def run_fuzz(database_url: str, work_dir: Path, requests: int, *, seed: int = 1, concurrency: int = 32,
                   api_every: int = 10, progress: bool = False) -> FuzzReport:
    """Fuzz a fresh `processor run` with `requests` webhook requests (and one API request per `api_every`)."""
    output = work_dir / "processor.log"
    proc, port = await start_processor(work_dir / "var", database_url, output)
    address = ("127.0.0.1", port)
    secrets = json.loads((work_dir / "var" / "secrets.json").read_text())
    secret, token = secrets["webhook_secret"], secrets["api_token"]
    settings = Settings(database_url=Secret(database_url))
    report = FuzzReport()
    try:
        before = await _record_count(settings)
        report.rss_start = report.rss_max = rss_bytes(proc.pid)
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_health(address, proc.pid, report, stop))
        started = time.monotonic()
        rng = random.Random(seed)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for serial in range(requests):
            queue.put_nowait(serial)

        async def worker() -> None:
            while not queue.empty():
                serial = queue.get_nowait()
                case = make_case(rng, secret, serial, int(time.time()))
                status = await send(address, case.raw, case.give_up_s)
                report.requests += 1
                report.valid_sent += case.valid
                report.ok += status == 200
                report.deferred += case.valid and status == 503
                report.statuses[status] += 1
                if (status == 200) != case.valid and not (case.valid and status == 503):
                    report.oracle_mismatches.append(f"{case.kind}: {status} for {case.raw[:300]!r}")
                if status is not None and status >= 500 and status not in DOCUMENTED_5XX:
                    report.unexpected_5xx.append(f"{case.kind}: {status}")
                if serial % api_every == 0:
                    raw, target = api_case(rng, token)
                    api_status = await send(address, raw)
                    report.api_requests += 1
                    if api_status is None or api_status >= 500:
                        report.api_5xx.append(f"{api_status} {target[:200]}")
                if progress and serial % 10_000 == 0:
                    print(f"{serial} sent, {time.monotonic() - started:.0f} s", flush=True)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        report.seconds = time.monotonic() - started
        stop.set()
        await watcher
        report.records_added = await _record_count(settings) - before
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    report.tracebacks = len(re.findall(r"Traceback \(most recent call last\)", output.read_text(errors="replace")))
    return report


async def _main(args: argparse.Namespace) -> int:
    from processor.db.embedded import start_embedded_server, stop_embedded_server

    # SIGTERM (a CI timeout, a `kill`) unwinds through the finally blocks below, so the `processor run` under
    # test and the embedded PostgreSQL stop with us instead of outliving the run
    this_task = asyncio.current_task()
    assert this_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this_task.cancel)
    with tempfile.TemporaryDirectory(prefix="processor-fuzz-") as tmp:
        work_dir = Path(tmp)
        # the embedded PostgreSQL runs as an unprivileged user when we are root
        os.chmod(work_dir, 0o755)  # noqa: S103 - a temporary directory of this run, holding no secret
        external = os.environ.get("PROCESSOR_DATABASE_URL")
        server_dsn = external or start_embedded_server(work_dir / "pg")
        try:
            name = f"fuzz_{os.getpid()}"
            admin = await asyncpg.connect(server_dsn)
            await admin.execute(f'CREATE DATABASE "{name}"')
            dsn = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", server_dsn.split("://", 1)[1], count=1)
            database_url = server_dsn.split("://", 1)[0] + "://" + dsn
            try:
                report = await run_fuzz(database_url, work_dir, args.requests, seed=args.seed,
                                        concurrency=args.concurrency, progress=True)
            finally:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                await admin.close()
        finally:
            if not external:
                stop_embedded_server(work_dir / "pg")
    print(report.summary())
    for problem in report.problems():
        print("PROBLEM:", problem)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    try:
        sys.exit(asyncio.run(_main(parser.parse_args())))
    except asyncio.CancelledError:
        sys.exit(143)
