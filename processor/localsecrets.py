"""Secrets the embedded default generates once and keeps under the data directory (mode 0600).

Only values the operator did not configure are generated: a signing key for refresh URLs, an API token for the
sandbox API, and the webhook secret shared with the bundled emulator. A second run on the same data directory
reads them back, so issued refresh URLs and tokens keep working. The bundled emulator's control token changes
with every run and is recorded here too (`emulator_token`), so tools on the same machine can read it.

The file is read and written without following symlinks, and one readable by other users is refused: on a
shared machine another user could have read its secrets, or planted the file or a link in its place.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from processor.errors import ConfigError
from processor.settings import Secret

FILE_NAME = "secrets.json"
#: generated once per data directory: name -> prefix of the random value
_GENERATED = {"signing_key": "", "api_token": "pat_", "webhook_secret": "whsec_"}


@dataclass(frozen=True, slots=True)
class LocalSecrets:
    signing_key: Secret
    api_token: Secret
    webhook_secret: Secret
    path: Path


def load_or_create(data_dir: Path) -> LocalSecrets:
    """Read `data_dir/secrets.json`, creating it (and `data_dir`, mode 0700) with fresh values the first time."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / FILE_NAME
    values = _read(path)
    missing = {name: prefix + secrets.token_urlsafe(32) for name, prefix in _GENERATED.items() if name not in values}
    if missing:
        values.update(missing)
        _write(path, values)
    return LocalSecrets(Secret(values["signing_key"]), Secret(values["api_token"]),
                        Secret(values["webhook_secret"]), path)


def record(path: Path, name: str, value: str) -> None:
    """Set one entry of an existing secrets file (the emulator's per-run token)."""
    values = _read(path)
    values[name] = value
    _write(path, values)


def _read(path: Path) -> dict[str, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}
    except OSError as exc:  # ELOOP: a symlink stands where the file should be
        raise ConfigError(str(path), f"cannot open the secrets file safely ({exc.strerror}); "
                                     "it must be a regular file, not a link") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise ConfigError(str(path), "the secrets file must be a regular file owned by the user running "
                                         "the processor")
        if info.st_mode & 0o077:
            raise ConfigError(str(path), (
                f"the secrets file is readable or writable by other users (mode {stat.S_IMODE(info.st_mode):04o}), "
                "so its secrets may have been read or changed: delete it to generate new ones, or "
                f"`chmod 600 {path}` if you are sure nobody else used it"))
        loaded = json.loads(handle.read())
    if not isinstance(loaded, dict):
        raise ConfigError(str(path), "the secrets file must hold a JSON object")
    return {str(k): str(v) for k, v in loaded.items()}


def _write(path: Path, values: dict[str, str]) -> None:
    # a fresh, unpredictable temporary name opened O_EXCL|O_NOFOLLOW with mode 0600 (mkstemp does all three), so
    # a leftover file or a planted symlink is never written through; the rename then replaces the file at once
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
