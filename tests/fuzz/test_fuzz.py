"""A bounded run of the raw-socket fuzzer against a real `processor run` (`make fuzz` runs 1,000,000)."""

from __future__ import annotations

from pathlib import Path

from fuzzer import run_fuzz

#: a few thousand cases: every mutation kind comes up dozens of times, in about a minute on a busy machine
REQUESTS = 3000


async def test_fuzzed_webhooks_and_api_requests_are_answered_as_the_oracle_says(pg_dsn: str, tmp_path: Path) -> None:
    """200 exactly for validly signed deliveries, one log record each, no unexpected 5xx, no traceback,
    bounded RSS and /healthz answering throughout."""
    report = await run_fuzz(pg_dsn, tmp_path, REQUESTS, seed=16)
    print(report.summary())
    assert report.requests == REQUESTS and report.valid_sent > REQUESTS // 4
    assert report.problems() == []
