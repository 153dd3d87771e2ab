"""Secrets the embedded default generates once and keeps under the data directory (mode 0600).

Only values the operator did not configure are generated: a signing key for refresh URLs, an API token for the
sandbox API, and the webhook secret shared with the bundled emulator. A second run on the same data directory
reads them back, so issued refresh URLs and tokens keep working.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from processor.settings import Secret

FILE_NAME = "secrets.json"


@dataclass(frozen=True, slots=True)
class LocalSecrets:
    signing_key: Secret
    api_token: Secret
    webhook_secret: Secret
    path: Path


def load_or_create(data_dir: Path) -> LocalSecrets:
    """Read `data_dir/secrets.json`, creating it with fresh random values the first time."""
    path = data_dir / FILE_NAME
    values: dict[str, str] = {}
    if path.exists():
        values = json.loads(path.read_text())
    wanted = {"signing_key": "", "api_token": "pat_", "webhook_secret": "whsec_"}
    missing = {name: prefix + secrets.token_urlsafe(32) for name, prefix in wanted.items() if name not in values}
    if missing:
        values.update(missing)
        data_dir.mkdir(parents=True, exist_ok=True)
        # write then rename, created 0600 from the start so the secrets are never readable by others
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
        tmp.replace(path)
    return LocalSecrets(Secret(values["signing_key"]), Secret(values["api_token"]),
                        Secret(values["webhook_secret"]), path)
