"""The HTTP server's limits, over raw sockets: what a hostile client can make it hold, and how it is answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from starlette.applications import Starlette
from uvicorn.config import Config
from uvicorn.server import ServerState

from processor.ingress.app import build_app
from processor.ingress.signature import sign
from processor.runtime.httplimits import HttpLimits, LimitedHttpProtocol
from processor.runtime.serving import serving
from processor.settings import Secret, Settings

SECRET = "whsec_limits_0123456789abcdef"
#: the server's default head timeout is 10 s; a closed connection must be seen well within this
CLOSE_WAIT_S = 40


def ingress_app() -> Starlette:
    """The ingress without an event log: a correctly signed delivery gets 503, anything else its 4xx."""
    return build_app(Settings(stripe_webhook_secrets=(Secret(SECRET),)))


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[str, int]]:
    async with serving(ingress_app(), lifespan="off") as url:  # no lifespan: no event log is opened
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def exchange(address: tuple[str, int], *pieces: bytes) -> bytes:
    """Send `pieces` (stopping early if the server closes) and read until the server closes or 30 s pass."""
    reader, writer = await asyncio.open_connection(*address)
    received = bytearray()
    answer = asyncio.create_task(read_until_closed(reader, received))
    try:
        for piece in pieces:
            if received or reader.at_eof():  # an answer began: stop sending, as a client would
                break
            writer.write(piece)
            try:
                await writer.drain()
            except ConnectionError:
                break
        async with asyncio.timeout(30):
            return await answer
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader, into: bytearray | None = None) -> bytes:
    data = bytearray() if into is None else into
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return bytes(data)


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def get(target: bytes, *headers: bytes) -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (target, lines)


async def test_a_huge_header_is_refused_with_431_before_it_is_all_read() -> None:
    """A 64 MiB header gets 431 and the connection closed once the head passes its limit, not after."""
    async with server() as address:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
        pieces = [head] + [b"a" * 65536] * 1024
        started = time.monotonic()
        response = await exchange(address, *pieces)
        assert status(response) == 431
        assert time.monotonic() - started < 20
        assert status(await exchange(address, get(b"/healthz"))) == 200


async def test_a_long_url_is_refused_with_414() -> None:
    """A request line of 1 MiB gets 414."""
    async with server() as address:
        response = await exchange(address, b"GET /healthz?q=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status(response) == 414


async def test_too_many_headers_are_refused_with_431() -> None:
    """200 small headers get 431 rather than reaching the app."""
    async with server() as address:
        response = await exchange(address, get(b"/healthz", *(b"X-%d: 1" % i for i in range(200))))
        assert status(response) == 431


async def test_a_silent_connection_is_closed() -> None:
    """A client that connects and never sends a byte is disconnected (10 s head timeout)."""
    async with server() as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                said = await read_until_closed(reader)  # returns at EOF: the server closed the connection
            assert said == b"" or status(said) == 408
        finally:
            writer.close()


async def test_a_trickled_head_is_answered_408_and_closed() -> None:
    """A head sent one byte every half second never completes in time: 408 and the connection closed."""
    async with server() as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                for byte in b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            if data := await reader.read(65536):
                                assert status(data) == 408
                                return
                    if reader.at_eof():
                        break
                pytest.fail("the server waited for the whole trickled head")
        except ConnectionError:
            pass  # closed while we were still writing: the limit held
        finally:
            writer.close()


def chunked_delivery(header_signature: str, trailer_signature: str, body: bytes) -> bytes:
    return (
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Stripe-Signature: %s\r\nTransfer-Encoding: chunked\r\nTrailer: Stripe-Signature\r\nConnection: close\r\n"
        b"\r\n%x\r\n%s\r\n0\r\nStripe-Signature: %s\r\n\r\n"
        % (header_signature.encode(), len(body), body, trailer_signature.encode())
    )


async def test_a_signature_in_a_chunked_trailer_is_ignored() -> None:
    """A bad Stripe-Signature in the header block and a good one in a trailer: rejected as the header says."""
    body = b'{"id":"evt_1","object":"event","type":"account.updated"}'
    good = sign(body, SECRET)
    async with server() as address:
        # the log is absent, so a delivery the ingress believes signed gets 503 and a rejected one 400
        assert status(await exchange(address, chunked_delivery(good, good, body))) == 503
        response = await exchange(address, chunked_delivery(f"t={int(time.time())},v1={'0' * 64}", good, body))
        assert status(response) == 400
        assert b"signature_mismatch" in response


async def test_percent_escapes_are_not_decoded_before_routing() -> None:
    """`/%6Detrics` and `/healthz%2F` are not `/metrics` and `/healthz/`: the path is routed as sent."""
    async with server() as address:
        assert status(await exchange(address, get(b"/metrics"))) == 200
        assert status(await exchange(address, get(b"/%6Detrics"))) == 404
        assert status(await exchange(address, get(b"/%68ealthz"))) == 404


async def test_content_length_with_thousands_of_digits_is_a_4xx_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Content-Length of 4,301 digits (zeros then 5): a 4xx and no traceback, never a 500."""
    caplog.set_level(logging.ERROR)
    async with server() as address:
        for length in (b"0" * 4300 + b"5", b"9" * 5000):
            request = (
                b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,v1=00\r\n"
                b"Content-Length: %s\r\nConnection: close\r\n\r\nhello" % length
            )
            assert 400 <= status(await exchange(address, request)) < 500
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_a_post_asking_to_upgrade_is_answered_at_once() -> None:
    """`Upgrade: websocket` on a webhook POST: answered (here 400) within seconds, not held open."""
    body = b'{"id":"evt_1"}'
    request = (
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Stripe-Signature: t=1,v1=00\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    async with server() as address:
        started = time.monotonic()
        response = await exchange(address, request)
        assert 400 <= status(response) < 500
        assert time.monotonic() - started < 8  # the ingress's own body deadline (10 s) is not what ended it


class _Transport(asyncio.Transport):
    """A connection's transport as the protocol sees it; `reset` is a peer that reset the connection before
    the answer, so that shutting down the write side fails (ENOTCONN), as a real socket's does."""

    def __init__(self, *, reset: bool) -> None:
        super().__init__()
        self.reset, self.closed, self.written = reset, False, b""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.reset:
            raise OSError(107, "Transport endpoint is not connected")

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def _until(check: Callable[[], bool], within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check() and time.monotonic() < deadline:  # noqa: ASYNC110 (the server's sweep timer sets no event)
        await asyncio.sleep(0.05)
    return check()


async def test_a_peer_gone_before_its_408_does_not_end_the_timeouts_of_the_others() -> None:
    """A silent connection whose peer reset it before the 408 is closed, and a silent connection that comes
    after it still gets its 408: the deadlines keep being enforced (the sweep died on the first one's error,
    and no timeout fired again for the server's life)."""
    config = Config(ingress_app(), lifespan="off")
    config.load()
    protocol = LimitedHttpProtocol.with_limits(HttpLimits(head_timeout_s=0.01))
    state = ServerState()
    gone, later = _Transport(reset=True), _Transport(reset=False)
    protocol(config=config, server_state=state, app_state={}).connection_made(gone)
    assert await _until(lambda: gone.written.startswith(b"HTTP/1.1 408 ")), gone.written
    assert await _until(lambda: gone.closed)
    protocol(config=config, server_state=state, app_state={}).connection_made(later)
    assert await _until(lambda: later.written.startswith(b"HTTP/1.1 408 ")), later.written
