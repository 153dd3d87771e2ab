"""Runs the SDK fidelity checks (tests/emulator/sdk) in the venv that has the SDK's preview line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "tests" / "emulator" / "sdk"
#: the preview SDK cannot share a venv with the processor's stable `stripe`; see tests/emulator/sdk/pytest.ini
PREVIEW_PYTHON = Path(os.environ.get("SDK_PREVIEW_PYTHON", REPO / ".venv-sdkpreview" / "bin" / "python"))
#: what `make sdk-preview` does (the Makefile pins the versions)
CREATE_VENV = "make sdk-preview"
EXPECTED_CHECKS = 7


def test_official_preview_sdk_accepts_the_emulator() -> None:
    """Every check in the preview-SDK suite passes (objects, errors, webhooks, the 100-sandbox run)."""
    assert PREVIEW_PYTHON.exists(), f"missing {PREVIEW_PYTHON}; create it with: {CREATE_VENV}"
    version = subprocess.run(
        [str(PREVIEW_PYTHON), "-c", "import stripe; print(stripe.VERSION)"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and "a" in version.stdout, f"{PREVIEW_PYTHON} lacks the preview SDK: {version}"
    result = subprocess.run(
        [
            str(PREVIEW_PYTHON),
            "-m",
            "pytest",
            "-c",
            str(SUITE / "pytest.ini"),
            "--rootdir",
            str(SUITE),
            str(SUITE),
            "-q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) == EXPECTED_CHECKS, output
    assert sys.executable != str(PREVIEW_PYTHON)
