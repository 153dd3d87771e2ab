"""The worker's health server answers probes and scrapes over real HTTP."""

from __future__ import annotations

import httpx

from processor.runtime.health import METRICS_CONTENT_TYPE, HealthServer


async def test_probes_follow_the_workers_state_and_metrics_are_served() -> None:
    """/healthz and /readyz turn 503 when the worker says so; /metrics serves the exposition; others 404/405."""
    state = {"alive": True, "ready": False}
    server = HealthServer(lambda: state["alive"], lambda: state["ready"], lambda: b"worker_up 1\n")
    async with server.serving("127.0.0.1", 0), httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        assert server.port > 0
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        not_ready = await http.get("/readyz")
        assert (not_ready.status_code, not_ready.json()) == (503, {"status": "unavailable"})
        state.update(alive=False, ready=True)
        assert (await http.get("/healthz")).status_code == 503
        assert (await http.get("/readyz")).status_code == 200
        metrics = await http.get("/metrics")
        assert metrics.text == "worker_up 1\n"
        assert metrics.headers["content-type"] == METRICS_CONTENT_TYPE
        assert (await http.get("/nothing")).status_code == 404
        assert (await http.post("/healthz")).status_code == 405
