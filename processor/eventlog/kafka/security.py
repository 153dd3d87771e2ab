"""How every Kafka client of the processor authenticates and encrypts: one place builds aiokafka's options.

Managed clusters (MSK, Confluent Cloud, Aiven, Strimzi, Redpanda) refuse plaintext, unauthenticated clients.
The protocol and credentials come from PROCESSOR_KAFKA_* variables; a combination that cannot work is refused at
start-up with the variable's name, and the TLS files are loaded once then, so a missing or broken PEM file is a
configuration error rather than a connection error minutes later. The producer, the consumers, the admin clients
of `processor topics` and the inspection readers all take `client_options()`, so no client can be built that
forgets the security settings.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processor.errors import ConfigError

if TYPE_CHECKING:
    from processor.settings import Secret

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: OAUTHBEARER and GSSAPI are left out: see deploy/README.md ("Kafka security") for why
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

PROTOCOL_VAR = "PROCESSOR_KAFKA_SECURITY_PROTOCOL"
MECHANISM_VAR = "PROCESSOR_KAFKA_SASL_MECHANISM"
USERNAME_VAR = "PROCESSOR_KAFKA_SASL_USERNAME"
PASSWORD_VAR = "PROCESSOR_KAFKA_SASL_PASSWORD"  # noqa: S105 - the variable's name, not a password
CAFILE_VAR = "PROCESSOR_KAFKA_SSL_CAFILE"
CERTFILE_VAR = "PROCESSOR_KAFKA_SSL_CERTFILE"
KEYFILE_VAR = "PROCESSOR_KAFKA_SSL_KEYFILE"


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The security settings shared by every Kafka client; the default is PLAINTEXT without authentication."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_env(cls, get: Callable[[str], str | None]) -> KafkaSecurity:
        """Read the PROCESSOR_KAFKA_* security variables through `get`; raise ConfigError naming a bad one."""
        from processor.settings import Secret  # settings imports this module for its field type

        protocol = (get(PROTOCOL_VAR) or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(PROTOCOL_VAR, f"expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        password = get(PASSWORD_VAR)
        security = cls(
            protocol=protocol,
            sasl_mechanism=(get(MECHANISM_VAR) or "").upper() or None,
            sasl_username=get(USERNAME_VAR),
            sasl_password=Secret(password) if password is not None else None,
            ssl_cafile=_path(get, CAFILE_VAR),
            ssl_certfile=_path(get, CERTFILE_VAR),
            ssl_keyfile=_path(get, KEYFILE_VAR),
        )
        security._check_sasl()
        security._check_ssl()
        security.ssl_context()  # load the files now: a broken PEM fails the start, naming its variable
        return security

    def _check_sasl(self) -> None:
        given = [(var, value) for var, value in ((MECHANISM_VAR, self.sasl_mechanism),
                                                 (USERNAME_VAR, self.sasl_username),
                                                 (PASSWORD_VAR, self.sasl_password)) if value is not None]
        if not self.uses_sasl:
            if given:
                raise ConfigError(given[0][0], f"only used with {PROTOCOL_VAR}=SASL_SSL or SASL_PLAINTEXT, "
                                               f"not {self.protocol}")
            return
        if self.sasl_mechanism is None:
            raise ConfigError(MECHANISM_VAR, f"required with {PROTOCOL_VAR}={self.protocol}: "
                                             f"one of {', '.join(SASL_MECHANISMS)}")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(MECHANISM_VAR, f"expected one of {', '.join(SASL_MECHANISMS)}, "
                                             f"got {self.sasl_mechanism!r}")
        if self.sasl_username is None:
            raise ConfigError(USERNAME_VAR, f"required with SASL mechanism {self.sasl_mechanism}")
        if self.sasl_password is None:
            raise ConfigError(PASSWORD_VAR, f"required with SASL mechanism {self.sasl_mechanism}")

    def _check_ssl(self) -> None:
        files = ((CAFILE_VAR, self.ssl_cafile), (CERTFILE_VAR, self.ssl_certfile), (KEYFILE_VAR, self.ssl_keyfile))
        for var, path in files:
            if path is None:
                continue
            if not self.uses_ssl:
                raise ConfigError(var, f"only used with {PROTOCOL_VAR}=SSL or SASL_SSL, not {self.protocol}")
            if not path.is_file():
                raise ConfigError(var, f"{path} is not a readable file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError(KEYFILE_VAR, f"a client key needs its certificate in {CERTFILE_VAR}")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context verifying the broker's certificate and host name; None without TLS.

        Without a CA file the system's trust store is used (the public CAs of managed clusters).
        """
        if not self.uses_ssl:
            return None
        try:
            # imported here: settings import this module in every command, and aiokafka costs ~0.3 s to import
            from aiokafka.helpers import create_ssl_context

            context: ssl.SSLContext = create_ssl_context(cafile=self.ssl_cafile)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(CAFILE_VAR, f"cannot load CA certificates from {self.ssl_cafile}: {exc}") from exc
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(CERTFILE_VAR, f"cannot load the client certificate {self.ssl_certfile} with key "
                                                f"{self.ssl_keyfile or '(in the same file)'}: {exc}") from exc
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # from_env refuses SASL without one
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                # aiokafka takes SCRAM credentials through the same two arguments as PLAIN
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.reveal(),
            )
        return options

    def describe(self) -> str:
        """A log-safe summary: protocol, mechanism and user, never the password."""
        if self.uses_sasl:
            return f"{self.protocol} ({self.sasl_mechanism} as {self.sasl_username})"
        if self.ssl_certfile is not None:
            return f"{self.protocol} (client certificate {self.ssl_certfile})"
        return self.protocol


def _path(get: Callable[[str], str | None], variable: str) -> Path | None:
    raw = get(variable)
    return Path(raw) if raw is not None else None


#: what a client uses when nothing is configured
PLAINTEXT = KafkaSecurity()
