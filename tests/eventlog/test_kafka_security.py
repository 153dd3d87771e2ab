"""Kafka client security settings: parsed from the environment, bad combinations refused naming the variable."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from processor.dev.certs import CertificateAuthority
from processor.errors import ConfigError
from processor.settings import Settings

SASL = {
    "PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "PROCESSOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "PROCESSOR_KAFKA_SASL_USERNAME": "processor",
    "PROCESSOR_KAFKA_SASL_PASSWORD": "kafka-password-123",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA file, a client certificate with its key, and a second key that does not match it."""
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority()
    cert, key = ca.issue("processor", client=True).write(directory, "client")
    _, other_key = ca.issue("someone-else", client=True).write(directory, "other")
    garbage = directory / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return {"ca": ca.write(directory), "cert": cert, "key": key, "other_key": other_key, "garbage": garbage}


def test_plaintext_is_the_default() -> None:
    """Nothing set: the clients speak PLAINTEXT, as before."""
    options = Settings.from_env({}).kafka_security.client_options()
    assert options == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_options_verify_the_broker(pki: dict[str, Path]) -> None:
    """SASL_SSL with SCRAM: credentials passed to aiokafka, broker certificate and host name verified."""
    security = Settings.from_env({**SASL, "PROCESSOR_KAFKA_SSL_CAFILE": str(pki["ca"])}).kafka_security
    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("processor", "kafka-password-123")
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_password_never_shown(pki: dict[str, Path]) -> None:
    """The SASL password is a Secret: not in the settings' repr or the log-safe description."""
    settings = Settings.from_env({**SASL, "PROCESSOR_KAFKA_SSL_CAFILE": str(pki["ca"])})
    assert "kafka-password-123" not in repr(settings)
    assert "kafka-password-123" not in settings.kafka_security.describe()
    assert settings.kafka_security.describe() == "SASL_SSL (SCRAM-SHA-512 as processor)"


def test_mtls_loads_the_client_certificate(pki: dict[str, Path]) -> None:
    """SSL with a client certificate and key: the context carries them (mTLS)."""
    security = Settings.from_env({
        "PROCESSOR_KAFKA_SECURITY_PROTOCOL": "ssl",
        "PROCESSOR_KAFKA_SSL_CAFILE": str(pki["ca"]),
        "PROCESSOR_KAFKA_SSL_CERTFILE": str(pki["cert"]),
        "PROCESSOR_KAFKA_SSL_KEYFILE": str(pki["key"]),
    }).kafka_security
    assert security.protocol == "SSL"
    assert "sasl_mechanism" not in security.client_options()


@pytest.mark.parametrize(("env", "variable"), [
    ({"PROCESSOR_KAFKA_SECURITY_PROTOCOL": "TLS"}, "PROCESSOR_KAFKA_SECURITY_PROTOCOL"),
    ({**SASL, "PROCESSOR_KAFKA_SASL_MECHANISM": ""}, "PROCESSOR_KAFKA_SASL_MECHANISM"),
    ({**SASL, "PROCESSOR_KAFKA_SASL_MECHANISM": "GSSAPI"}, "PROCESSOR_KAFKA_SASL_MECHANISM"),
    ({**SASL, "PROCESSOR_KAFKA_SASL_MECHANISM": "OAUTHBEARER"}, "PROCESSOR_KAFKA_SASL_MECHANISM"),
    ({**SASL, "PROCESSOR_KAFKA_SASL_USERNAME": ""}, "PROCESSOR_KAFKA_SASL_USERNAME"),
    ({**SASL, "PROCESSOR_KAFKA_SASL_PASSWORD": " "}, "PROCESSOR_KAFKA_SASL_PASSWORD"),
    ({**SASL, "PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SSL"}, "PROCESSOR_KAFKA_SASL_MECHANISM"),
    ({"PROCESSOR_KAFKA_SASL_USERNAME": "u"}, "PROCESSOR_KAFKA_SASL_USERNAME"),
    ({"PROCESSOR_KAFKA_SSL_CAFILE": "{ca}"}, "PROCESSOR_KAFKA_SSL_CAFILE"),
    ({**SASL, "PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PROCESSOR_KAFKA_SSL_CAFILE": "{ca}"},
     "PROCESSOR_KAFKA_SSL_CAFILE"),
    ({"PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SSL", "PROCESSOR_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "PROCESSOR_KAFKA_SSL_CAFILE"),
    ({"PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SSL", "PROCESSOR_KAFKA_SSL_CAFILE": "{garbage}"},
     "PROCESSOR_KAFKA_SSL_CAFILE"),
    ({"PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SSL", "PROCESSOR_KAFKA_SSL_KEYFILE": "{key}"},
     "PROCESSOR_KAFKA_SSL_KEYFILE"),
    ({"PROCESSOR_KAFKA_SECURITY_PROTOCOL": "SSL", "PROCESSOR_KAFKA_SSL_CERTFILE": "{cert}",
      "PROCESSOR_KAFKA_SSL_KEYFILE": "{other_key}"}, "PROCESSOR_KAFKA_SSL_CERTFILE"),
])
def test_bad_combination_names_the_variable(env: dict[str, str], variable: str, pki: dict[str, Path]) -> None:
    """Each combination that cannot work is refused at start-up, naming the variable to fix."""
    env = {name: value.format(**{k: str(v) for k, v in pki.items()}) for name, value in env.items()}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_cli_exits_2_naming_the_variable() -> None:
    """A command started with a bad security setting exits 2 with the variable's name, no traceback."""
    env = {**os.environ, **SASL, "PROCESSOR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "PROCESSOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"}
    result = subprocess.run([sys.executable, "-m", "processor", "topics", "create"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert "PROCESSOR_KAFKA_SASL_MECHANISM" in result.stderr
    assert "Traceback" not in result.stderr
