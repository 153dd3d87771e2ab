"""A plain Starlette webhook receiver on a free 127.0.0.1 port, for the emulator's delivery tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processor.runtime.serving import free_port, serving

#: decides the answer to one delivery from its raw body and its Stripe-Signature header
Handler = Callable[[bytes, str], Awaitable[int]]


@dataclass
class Delivery:
    body: bytes
    signature: str
    status: int


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)


async def _accept(body: bytes, signature: str) -> int:
    return 200


@asynccontextmanager
async def running_receiver(handler: Handler = _accept) -> AsyncIterator[Receiver]:
    """Serve POST /webhooks with uvicorn in this loop; every delivery is recorded with the status answered."""
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/webhooks")

    async def webhook(request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get("stripe-signature", "")
        status = await handler(body, signature)
        receiver.deliveries.append(Delivery(body, signature, status))
        return Response(status_code=status)

    app = Starlette(routes=[Route("/webhooks", webhook, methods=["POST"])])
    async with serving(app, port=port, lifespan="off"):
        yield receiver
