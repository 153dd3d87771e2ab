"""docker-compose has no well-known secrets: every secret variable must be set, or compose refuses to start."""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"
#: variables holding secrets; `${NAME:?message}` makes compose stop with the message when one is unset or empty
SECRETS = ("POSTGRES_PASSWORD", "PROCESSOR_API_TOKENS", "PROCESSOR_SIGNING_KEY", "STRIPE_WEBHOOK_SECRETS",
           "STRIPE_API_KEY")
#: what the file used to fall back to: anyone could look these up and sign webhooks or call the API
WELL_KNOWN = ("processor-local-only", "local-operator-token-change-me", "local-signing-key-change-me",
              "whsec_local_emulator_only", "sk_test_emulator}")


def test_every_secret_is_required() -> None:
    """Each secret variable is used, and every use is `${NAME:?...}` (required), never `${NAME:-default}`."""
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[-?+]?)([^}]*)\}", text)
        assert uses, f"{name} is not used in the compose file"
        assert all(op == ":?" and message.strip() for op, message in uses), f"{name} must be ${{{name}:?message}}"
    assert not [value for value in WELL_KNOWN if value in text]


def test_secrets_reach_the_services_only_through_those_variables() -> None:
    """No service sets a secret variable to a literal (which would bypass the check above)."""
    literal = re.compile(r"^\s*(" + "|".join(SECRETS) + r"|EMULATOR_API_KEY|EMULATOR_WEBHOOK_SECRET):\s*(.*)$", re.M)
    for name, value in literal.findall(COMPOSE.read_text()):
        assert value.startswith("${") and ":?" in value, f"{name} is set to {value!r}"
