"""Where the data folders `statemachine/` and `schemas/` are, installed or in a source checkout.

The wheel carries them under `processor/_data/` (hatch force-include); a source checkout or editable install
has them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The directory `name` ("statemachine" or "schemas"), wherever this processor was installed from."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"data folder {name!r} is missing from this installation")
