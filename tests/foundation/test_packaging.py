"""The wheel an operator installs carries the lifecycle definition, the schemas and the migrations."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_data_folders(tmp_path: Path) -> None:
    """statemachine/ and schemas/ land under processor/_data/, the SQL migrations inside the package."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300,
    )
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"processor/_data/statemachine/{p.name}" for p in (ROOT / "statemachine").iterdir()}
    expected |= {f"processor/_data/schemas/{p.name}" for p in (ROOT / "schemas").iterdir()}
    expected |= {f"processor/db/migrations/{p.name}" for p in (ROOT / "processor" / "db" / "migrations").glob("*.sql")}
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith("statemachine/") for name in names), "no top-level statemachine package"
