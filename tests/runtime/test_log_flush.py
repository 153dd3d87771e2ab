"""A command stopped by SIGTERM writes its last log lines: `processor ingress` (one worker or several) ends with
uvicorn's "Application shutdown complete" and "Finished server process", which its buffered JSON log used to
lose."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processor.runtime.serving import free_port


def _count(path: Path, text: str) -> int:
    return path.read_text().count(text)


@pytest.mark.parametrize("workers", [1, 2])
def test_ingress_writes_its_last_lines_on_sigterm(kafka_bootstrap: str, tmp_path: Path, workers: int) -> None:
    """SIGTERM after start-up: every worker's shutdown lines reach stderr before the process is gone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCESSOR_", "STRIPE_"))}
    env.update(
        PROCESSOR_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        PROCESSOR_TOPIC_PREFIX=f"flush{os.getpid()}{workers}.",
        STRIPE_WEBHOOK_SECRETS="whsec_test_flush_0123456789",
    )
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "processor",
                "ingress",
                "--port",
                str(free_port("127.0.0.1")),
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while _count(stderr, "Application startup complete") < workers:
                assert process.poll() is None, stderr.read_text()
                assert time.monotonic() < deadline, "the ingress did not start"
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode in (0, -signal.SIGTERM)
    assert _count(stderr, "Application shutdown complete") == workers, stderr.read_text()
    assert _count(stderr, "Finished server process") == workers, stderr.read_text()
