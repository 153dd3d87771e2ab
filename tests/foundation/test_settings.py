"""Settings: built from a mapping, secrets hidden, bad values named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from processor.errors import ConfigError
from processor.settings import Secret, Settings


def test_nothing_configured_means_embedded_default() -> None:
    """An empty environment gives the embedded PostgreSQL and the PostgreSQL-table log."""
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.embedded_log
    assert settings.topic("stripe.events") == "stripe.events"


def test_values_are_parsed() -> None:
    """Lists are split on commas and trimmed; the prefix applies to topic names."""
    settings = Settings.from_env({
        "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": "k1:9092, [::1]:9093",
        "PROCESSOR_TOPIC_PREFIX": "prod.",
        "STRIPE_WEBHOOK_SECRETS": "whsec_a, whsec_b",
        "PROCESSOR_STRIPE_MAX_RPS": "100",
    })
    assert settings.kafka_bootstrap_servers == ("k1:9092", "[::1]:9093")
    assert not settings.embedded_log
    assert settings.topic("sandbox.state") == "prod.sandbox.state"
    assert [s.reveal() for s in settings.stripe_webhook_secrets] == ["whsec_a", "whsec_b"]
    assert settings.stripe_max_rps == 100.0


@pytest.mark.parametrize(("variable", "value"), [
    ("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS", ":::"),
    ("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS", "host-without-port"),
    ("PROCESSOR_KAFKA_BOOTSTRAP_SERVERS", "host:70000"),
    ("PROCESSOR_DATABASE_URL", "mysql://x/y"),
    ("STRIPE_API_BASE", "ftp://stripe"),
    ("PROCESSOR_STRIPE_MAX_RPS", "fast"),
    ("PROCESSOR_PORT", "99999"),
    ("PROCESSOR_TOPIC_PREFIX", "bad prefix"),
    ("PROCESSOR_SIGNING_KEY", "short"),
])
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    """Each bad value raises ConfigError naming the variable, not a deep stack trace."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_secrets_never_appear_in_repr() -> None:
    """Neither repr nor str of the settings shows a secret value."""
    settings = Settings.from_env({
        "STRIPE_API_KEY": "sk_test_supersecret",
        "STRIPE_WEBHOOK_SECRETS": "whsec_topsecret",
        "PROCESSOR_API_TOKENS": "tok_hidden",
        "PROCESSOR_DATABASE_URL": "postgresql://u:dbpassword@db/x",
    })
    text = repr(settings) + str(settings) + repr(Secret("x"))
    for secret in ("supersecret", "topsecret", "tok_hidden", "dbpassword"):
        assert secret not in text


def test_cli_reports_config_error_with_exit_code_2() -> None:
    """`processor` with a bad variable prints one line naming it and exits 2, without a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "processor", "db", "status"],
        env={"PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": ":::", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS" in result.stderr
    assert "Traceback" not in result.stderr
