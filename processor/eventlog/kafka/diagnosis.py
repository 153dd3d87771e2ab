"""Why a Kafka client cannot connect or write, in words naming what to fix (used by the Kafka event log only).

Kept out of processor/eventlog/kafka/security.py, which every command imports through the settings: aiokafka is slow to
import and only Kafka clients need it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from aiokafka import errors
from aiokafka.conn import create_conn

from processor.eventlog.kafka.security import (
    CAFILE_VAR,
    CERTFILE_VAR,
    KEYFILE_VAR,
    MECHANISM_VAR,
    PASSWORD_VAR,
    PROTOCOL_VAR,
    USERNAME_VAR,
    KafkaSecurity,
)

#: errors that mean "this client may not do that": retrying without an operator's change does not help
AUTHORIZATION_ERRORS = (
    errors.TopicAuthorizationFailedError,
    errors.GroupAuthorizationFailedError,
    errors.ClusterAuthorizationFailedError,
    errors.TransactionalIdAuthorizationFailed,
)


async def diagnose(bootstrap_servers: Sequence[str], security: KafkaSecurity, timeout_s: float = 10.0) -> str | None:
    """Why a client cannot reach the cluster, in words naming what to fix; None if the first server accepts us.

    aiokafka reports a failed bootstrap as "Unable to bootstrap", whatever the cause (refused, untrusted
    certificate, wrong password): one direct connection to the first server tells them apart.
    """
    host, _, port = bootstrap_servers[0].rpartition(":")
    try:
        async with asyncio.timeout(timeout_s):
            connection = await create_conn(host.strip("[]"), int(port), request_timeout_ms=int(timeout_s * 1000),
                                           **security.client_options())
    except ssl.SSLCertVerificationError as exc:
        return (f"the broker's TLS certificate was not accepted ({exc.verify_message}): check "
                f"{CAFILE_VAR} (the CA that signed the brokers' certificates) and that the bootstrap host names "
                "are in the certificates")
    except ssl.SSLError as exc:
        return (f"TLS handshake failed ({exc.reason or exc}): a broker requiring a client certificate refused ours "
                f"({CERTFILE_VAR}/{KEYFILE_VAR}), or {PROTOCOL_VAR}={security.protocol} does not match the listener")
    except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
        return (f"SASL authentication as {security.sasl_username!r} with {security.sasl_mechanism} failed ({exc}): "
                f"check {USERNAME_VAR}, {PASSWORD_VAR} and {MECHANISM_VAR}")
    except TimeoutError:
        return (f"no answer from {bootstrap_servers[0]} within {timeout_s:.0f} s: is {PROTOCOL_VAR}="
                f"{security.protocol} what this listener speaks?")
    except (OSError, errors.KafkaError) as exc:
        return f"{bootstrap_servers[0]}: {type(exc).__name__}: {exc}"
    connection.close()
    return None
