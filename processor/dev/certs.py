"""A throwaway certificate authority for local TLS listeners (`processor dev kafka start --secure`, tests).

Made with the `cryptography` package (the `dev` extra), never used in production: real clusters bring their
own CA. Keys are EC P-256 in unencrypted PKCS#8 PEM, the form both Python's ssl module and Kafka's PEM key
stores read; server certificates name 127.0.0.1 and localhost so clients verify host names as in production.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: long enough for any development session, short enough that a leaked file soon means nothing
VALIDITY = datetime.timedelta(days=30)
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _x509() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        raise RuntimeError("TLS for local servers needs the `cryptography` package: pip install -e '.[dev]'") from None
    return x509


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write `<name>.crt` and `<name>.key` (mode 0600) into `directory`; return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.key_pem)
        return cert, key


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, common_name: str = "processor development CA") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        x509 = _x509()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
        self._cert = self._builder(self._name, self._key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True,
        ).add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True,
        ).sign(self._key, _sha256())

    def _builder(self, subject: Any, public_key: Any) -> Any:
        x509 = _x509()
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))

    @property
    def cert_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return bytes(self._cert.public_bytes(Encoding.PEM))

    def issue(self, common_name: str, *, hosts: tuple[str, ...] = LOCAL_HOSTS, client: bool = False) -> KeyPair:
        """A certificate for a server reachable as `hosts`, or (`client`) for a client named `common_name`."""
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        x509 = _x509()
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = self._builder(subject, key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True,
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if not client:
            names = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, _sha256())
        return KeyPair(
            cert_pem=cert.public_bytes(Encoding.PEM),
            key_pem=key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        )

    def write(self, directory: Path, name: str = "ca") -> Path:
        """Write the CA certificate (not its key: nothing outside this object signs) as `<name>.crt`."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.crt"
        path.write_bytes(self.cert_pem)
        return path


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
