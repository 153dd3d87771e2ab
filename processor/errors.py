"""Every error the processor raises on purpose.

Each class says whether retrying can help (`retriable`), so the consumer decides between "back off and try
again" and "dead-letter" from the type, never from message text.
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Base of our errors."""

    retriable: bool = False
    #: short machine-readable code used in HTTP error bodies, DLQ headers and metrics
    code: str = "processor_error"


class ConfigError(ProcessorError):
    """A setting has an invalid value; `variable` names the environment variable."""

    code = "invalid_config"

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class LogUnavailable(ProcessorError):
    """The event log (Kafka or the PostgreSQL log) did not acknowledge a write or read in time."""

    retriable = True
    code = "log_unavailable"


class Fenced(LogUnavailable):
    """A writer that lost its role (the relay's lease) tried to write: the log refused it, as it must."""

    code = "fenced"


class CommitRejected(ProcessorError):
    """The consumer no longer owns a partition (rebalance); its records will be redelivered elsewhere."""

    retriable = True
    code = "commit_rejected"


class DatabaseUnavailable(ProcessorError):
    retriable = True
    code = "database_unavailable"


class StripeError(ProcessorError):
    """A call to Stripe failed; `retriable` follows the status and `Stripe-Should-Retry`."""

    code = "stripe_error"

    def __init__(self, message: str, *, status: int | None = None, retriable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retriable = retriable


class SignatureError(ProcessorError):
    """A webhook's `Stripe-Signature` header is missing, malformed, stale or does not match."""

    code = "invalid_signature"

    def __init__(self, message: str, *, code: str = "invalid_signature") -> None:
        super().__init__(message)
        self.code = code


class PoisonEvent(ProcessorError):
    """An event that can never be processed as it is (malformed, anomaly): it goes to the DLQ."""

    code = "poison_event"


class Anomaly(PoisonEvent):
    """An observed state that the lifecycle cannot reach from the current one (e.g. expired after claimed)."""

    code = "lifecycle_anomaly"
