"""Is the connection to PostgreSQL protected? A managed server across a network needs TLS with verification.

asyncpg reads `sslmode`, `sslrootcert`, `sslcert` and `sslkey` from the URL (and PGSSLMODE etc. from the
environment) itself; this module only decides whether to warn. Its default, `prefer`, encrypts when the server
offers TLS but accepts any certificate, and falls back to plaintext: fine on a laptop, not across a network.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

#: modes that refuse a plaintext connection (only the verify-* ones also stop an impostor)
TLS_MODES = ("require", "verify-ca", "verify-full")


def _is_local(host: str) -> bool:
    if not host or host.startswith("/") or host == "localhost":  # a Unix socket directory is local by nature
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hosts(dsn: str) -> list[str]:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    hosts = query.get("host", [])
    netloc = parts.netloc.rpartition("@")[2]
    for entry in filter(None, netloc.split(",")):  # postgresql://h1:5432,h2:5432/db
        host = entry.rsplit(":", 1)[0] if not entry.endswith("]") else entry
        hosts.append(host)
    return hosts or [os.environ.get("PGHOST", "")]


def plaintext_warning(dsn: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A warning when `dsn` reaches a non-local server without requiring TLS; None when it is fine."""
    env = os.environ if environ is None else environ
    mode = (parse_qs(urlsplit(dsn).query).get("sslmode") or [env.get("PGSSLMODE", "prefer")])[0]
    remote = [host for host in _hosts(dsn) if not _is_local(host)]
    if not remote or mode in TLS_MODES:
        return None
    return (f"PROCESSOR_DATABASE_URL reaches {', '.join(remote)} with sslmode={mode}: the connection may be "
            "unencrypted and the server is not verified; add sslmode=verify-full&sslrootcert=<CA file> "
            "(see README, 'PostgreSQL over TLS')")
