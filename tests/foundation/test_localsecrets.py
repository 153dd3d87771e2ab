"""The local secrets file: private from the start, never written through a planted file or link, and refused
when other users could have read it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from processor import localsecrets
from processor.errors import ConfigError


def test_data_dir_and_file_are_private(tmp_path: Path) -> None:
    """A new data directory is created 0700 and secrets.json 0600; a second load reads the same values."""
    data_dir = tmp_path / "var"
    first = localsecrets.load_or_create(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    second = localsecrets.load_or_create(data_dir)
    assert second.api_token.reveal() == first.api_token.reveal()


def test_leftover_temp_file_and_planted_symlink_are_not_written_through(tmp_path: Path) -> None:
    """A world-readable leftover `secrets.tmp` and a symlink planted as `secrets.tmp` (pointing at a file another
    user could read) never receive the secrets; secrets.json ends up a private regular file."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    outside = tmp_path / "readable-by-anyone.json"
    outside.write_text("")
    outside.chmod(0o644)
    (data_dir / "secrets.tmp").symlink_to(outside)
    local = localsecrets.load_or_create(data_dir)
    assert outside.read_text() == ""
    info = os.lstat(local.path)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    leftover = other_dir / "secrets.tmp"
    leftover.write_text("{}")
    leftover.chmod(0o644)
    local = localsecrets.load_or_create(other_dir)
    assert stat.S_IMODE(local.path.stat().st_mode) == 0o600


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """An existing 0666 secrets.json is not used silently: the error names the file and the way out."""
    data_dir = tmp_path / "var"
    local = localsecrets.load_or_create(data_dir)
    local.path.chmod(0o666)
    with pytest.raises(ConfigError, match="other users") as refused:
        localsecrets.load_or_create(data_dir)
    assert str(local.path) in str(refused.value) and "chmod 600" in str(refused.value)


def test_secrets_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    """secrets.json replaced by a link to another file is refused, not read or rewritten through."""
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"signing_key": "planted"}))
    target.chmod(0o600)
    (data_dir / "secrets.json").symlink_to(target)
    with pytest.raises(ConfigError, match="link"):
        localsecrets.load_or_create(data_dir)
    assert json.loads(target.read_text()) == {"signing_key": "planted"}


def test_record_keeps_the_other_secrets(tmp_path: Path) -> None:
    """Recording the emulator's token adds one key and leaves the generated secrets as they were."""
    local = localsecrets.load_or_create(tmp_path / "var")
    localsecrets.record(local.path, "emulator_token", "emutok_example_000000")
    stored = json.loads(local.path.read_text())
    assert stored["emulator_token"] == "emutok_example_000000"
    assert stored["api_token"] == local.api_token.reveal()
    assert stat.S_IMODE(local.path.stat().st_mode) == 0o600
