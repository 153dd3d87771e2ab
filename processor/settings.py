"""Configuration from the environment (12-factor), as one immutable object built from a mapping.

Tests pass a dict; the CLI passes `os.environ`. Nothing configured means the embedded default: a private
PostgreSQL under the data directory and the PostgreSQL-table event log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from processor import constants as c
from processor.errors import ConfigError
from processor.eventlog.kafka.security import PLAINTEXT, KafkaSecurity


class Secret:
    """A value that must never reach a log line or a `repr`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _parse_bootstrap(variable: str, raw: str) -> tuple[str, ...]:
    servers = _split(raw)
    if not servers:
        raise ConfigError(variable, "expected a comma-separated list of host:port")
    for server in servers:
        host, sep, port = server.rpartition(":")
        bracketed_ipv6 = host.startswith("[") and host.endswith("]")
        if bracketed_ipv6:
            host = host[1:-1]
        valid = sep and host and (bracketed_ipv6 or ":" not in host) and port.isdigit()
        if not valid or not 0 < int(port) < 65536:
            raise ConfigError(variable, f"{server!r} is not host:port")
    return tuple(servers)


def _parse_url(variable: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not (parts.netloc or parts.query):
        raise ConfigError(variable, f"expected a URL with scheme {' or '.join(schemes)}")
    return raw.rstrip("/")


def _parse_number(variable: str, raw: str, kind: type[int] | type[float], minimum: float) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(variable, f"expected a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(variable, f"must be at least {minimum}")
    return value


def _parse_port(variable: str, raw: str) -> int:
    port = int(_parse_number(variable, raw, int, 0))
    if port > 65535:
        raise ConfigError(variable, "must be at most 65535")
    return port


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the processor can be told; defaults are the embedded default."""

    database_url: Secret | None = None
    data_dir: Path = Path("var")
    kafka_bootstrap_servers: tuple[str, ...] = ()
    kafka_security: KafkaSecurity = PLAINTEXT
    topic_prefix: str = ""
    embedded_partitions: int = c.DEFAULT_EMBEDDED_PARTITIONS
    stripe_api_key: Secret | None = None
    stripe_webhook_secrets: tuple[Secret, ...] = ()
    stripe_api_base: str = "https://api.stripe.com"
    #: the Stripe key's rate limit, shared by every process using the key (not a per-process limit)
    stripe_max_rps: float = c.DEFAULT_STRIPE_MAX_RPS
    #: the share of that limit left to calls the platform makes with the key outside this service
    stripe_headroom: float = c.DEFAULT_STRIPE_HEADROOM
    public_url: str = "http://127.0.0.1:8000"
    api_tokens: tuple[Secret, ...] = ()
    #: tokens that sign in to the operator console to look only (no replay, purge or reconcile)
    console_readonly_tokens: tuple[Secret, ...] = ()
    signing_key: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = c.DEFAULT_MAX_BODY_BYTES
    max_body_bytes_in_flight: int = c.DEFAULT_MAX_BODY_BYTES_IN_FLIGHT
    max_connections: int = c.DEFAULT_MAX_CONNECTIONS
    head_timeout_s: float = c.DEFAULT_HEAD_TIMEOUT_S
    #: serve /metrics on this port only (not on the public one); None = on the public port
    metrics_port: int | None = None
    signature_tolerance_s: int = c.DEFAULT_SIGNATURE_TOLERANCE_S
    publish_timeout_s: float = c.DEFAULT_PUBLISH_TIMEOUT_S
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default `os.environ`); raise ConfigError naming a bad variable."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        # read in this order, so that of several bad variables the same one is named every time
        kwargs = {**_storage_options(get), **_stripe_options(get), **_access_options(get), **_server_options(get)}
        kwargs["extra"] = {k: v for k, v in env.items() if k.startswith(("PROCESSOR_", "STRIPE_"))}
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def embedded_log(self) -> bool:
        """True when no Kafka is configured: the event log is a table in PostgreSQL."""
        return not self.kafka_bootstrap_servers

    def topic(self, name: str) -> str:
        """The full name of one of the topics in `constants.ALL_TOPICS`."""
        return f"{self.topic_prefix}{name}"


#: reads one variable, stripped; None when unset or blank
_Getter = Callable[[str], str | None]


def _storage_options(get: _Getter) -> dict[str, object]:
    """Where state lives: the database, the data directory, the Kafka cluster and its topics."""
    kwargs: dict[str, object] = {}
    if raw := get("PROCESSOR_DATABASE_URL"):
        _parse_url("PROCESSOR_DATABASE_URL", raw, ("postgresql", "postgres"))
        kwargs["database_url"] = Secret(raw)
    if raw := get("PROCESSOR_DATA_DIR"):
        kwargs["data_dir"] = Path(raw)
    if raw := get("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS"):
        kwargs["kafka_bootstrap_servers"] = _parse_bootstrap("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS", raw)
    kwargs["kafka_security"] = KafkaSecurity.from_env(get)
    if raw := get("PROCESSOR_TOPIC_PREFIX"):
        if not all(ch.isalnum() or ch in "._-" for ch in raw):
            raise ConfigError("PROCESSOR_TOPIC_PREFIX", "may only contain letters, digits, '.', '_', '-'")
        kwargs["topic_prefix"] = raw
    if raw := get("PROCESSOR_EMBEDDED_PARTITIONS"):
        kwargs["embedded_partitions"] = int(_parse_number("PROCESSOR_EMBEDDED_PARTITIONS", raw, int, 1))
    return kwargs


def _stripe_options(get: _Getter) -> dict[str, object]:
    """The Stripe account: API key, webhook secrets, API base and the share of the key's rate limit."""
    kwargs: dict[str, object] = {}
    if raw := get("STRIPE_API_KEY"):
        kwargs["stripe_api_key"] = Secret(raw)
    if raw := get("STRIPE_WEBHOOK_SECRETS"):
        kwargs["stripe_webhook_secrets"] = tuple(Secret(s) for s in _split(raw))
    if raw := get("STRIPE_API_BASE"):
        kwargs["stripe_api_base"] = _parse_url("STRIPE_API_BASE", raw, ("http", "https"))
    if raw := get("PROCESSOR_STRIPE_MAX_RPS"):
        kwargs["stripe_max_rps"] = _parse_number("PROCESSOR_STRIPE_MAX_RPS", raw, float, 0.1)
    if raw := get("PROCESSOR_STRIPE_HEADROOM"):
        headroom = _parse_number("PROCESSOR_STRIPE_HEADROOM", raw, float, 0.0)
        if headroom >= 0.9:
            raise ConfigError("PROCESSOR_STRIPE_HEADROOM", "must be below 0.9 (a share of the key's limit)")
        kwargs["stripe_headroom"] = headroom
    return kwargs


def _access_options(get: _Getter) -> dict[str, object]:
    """Who may call the API and the console: the public URL, the tokens and the signing key."""
    kwargs: dict[str, object] = {}
    if raw := get("PROCESSOR_PUBLIC_URL"):
        kwargs["public_url"] = _parse_url("PROCESSOR_PUBLIC_URL", raw, ("http", "https"))
    if raw := get("PROCESSOR_API_TOKENS"):
        kwargs["api_tokens"] = tuple(Secret(s) for s in _split(raw))
    if raw := get("PROCESSOR_CONSOLE_READONLY_TOKENS"):
        kwargs["console_readonly_tokens"] = tuple(Secret(s) for s in _split(raw))
    if raw := get("PROCESSOR_SIGNING_KEY"):
        if len(raw) < 16:
            raise ConfigError("PROCESSOR_SIGNING_KEY", "must be at least 16 characters")
        kwargs["signing_key"] = Secret(raw)
    return kwargs


def _server_options(get: _Getter) -> dict[str, object]:
    """The HTTP server: address, ports, what a request may hold and how long an answer may wait."""
    kwargs: dict[str, object] = {}
    if raw := get("PROCESSOR_HOST"):
        kwargs["host"] = raw
    if raw := get("PROCESSOR_PORT"):
        kwargs["port"] = _parse_port("PROCESSOR_PORT", raw)
    if raw := get("PROCESSOR_MAX_BODY_BYTES"):
        kwargs["max_body_bytes"] = int(_parse_number("PROCESSOR_MAX_BODY_BYTES", raw, int, 1))
    if raw := get("PROCESSOR_MAX_BODY_BYTES_IN_FLIGHT"):
        kwargs["max_body_bytes_in_flight"] = int(
            _parse_number("PROCESSOR_MAX_BODY_BYTES_IN_FLIGHT", raw, int, c.DEFAULT_MAX_BODY_BYTES))
    if raw := get("PROCESSOR_MAX_CONNECTIONS"):
        kwargs["max_connections"] = int(_parse_number("PROCESSOR_MAX_CONNECTIONS", raw, int, 1))
    if raw := get("PROCESSOR_HEAD_TIMEOUT"):
        kwargs["head_timeout_s"] = _parse_number("PROCESSOR_HEAD_TIMEOUT", raw, float, 0.1)
    if raw := get("PROCESSOR_METRICS_PORT"):
        kwargs["metrics_port"] = _parse_port("PROCESSOR_METRICS_PORT", raw)
    if raw := get("STRIPE_WEBHOOK_TOLERANCE"):
        kwargs["signature_tolerance_s"] = int(_parse_number("STRIPE_WEBHOOK_TOLERANCE", raw, int, 1))
    if raw := get("PROCESSOR_PUBLISH_TIMEOUT"):
        kwargs["publish_timeout_s"] = _parse_number("PROCESSOR_PUBLISH_TIMEOUT", raw, float, 0.01)
    return kwargs
