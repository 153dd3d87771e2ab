"""Names and limits shared by every part of the processor, each with the reason for its value."""

from __future__ import annotations

# --- topics (ARCHITECTURE §7); the configured prefix is prepended by `Settings.topic()` ----------------------
TOPIC_EVENTS = "stripe.events"
TOPIC_DLQ = "stripe.events.dlq"
TOPIC_TRANSITIONS = "sandbox.transitions"
TOPIC_STATE = "sandbox.state"
ALL_TOPICS = (TOPIC_EVENTS, TOPIC_DLQ, TOPIC_TRANSITIONS, TOPIC_STATE)

#: consumer group of the lifecycle consumers
GROUP_LIFECYCLE = "lifecycle"

# --- record headers on stripe.events (ARCHITECTURE §4) -------------------------------------------------------
H_EVENT_ID = "stripe.event-id"
H_EVENT_TYPE = "stripe.event-type"
H_OBJECT = "stripe.object"  # "v2.core.event" (thin) or "event" (v1 snapshot)
H_RECEIVED_AT = "received-at"  # RFC 3339 UTC, when the ingress accepted the delivery
H_SECRET_INDEX = "stripe.secret-index"  # noqa: S105 (a header name, not a secret); which configured secret verified it: the index, never the secret

# --- sandbox.state headers ------------------------------------------------------------------------------------
#: the snapshot's `version` (as in its value), so a reader can drop an older snapshot without parsing the value
H_STATE_VERSION = "sandbox.version"

# --- replay headers: set on records `processor replay` re-publishes ---------------------------------------------
H_REPLAY_RUN = "replay.run-id"  # the replay run that published the copy (a re-run resumes by it)
H_REPLAY_OF = "replay.of"  # what the copy was made from

# --- DLQ headers (ARCHITECTURE §6) ---------------------------------------------------------------------------
H_ERROR_CLASS = "error.class"
H_ERROR_MESSAGE = "error.message"
H_FAILED_AT = "failed-at"
H_ATTEMPTS = "attempts"
H_ORIGINAL_TOPIC = "original.topic"
H_ORIGINAL_PARTITION = "original.partition"
H_ORIGINAL_OFFSET = "original.offset"
#: every header the DLQ adds; a record that leaves the DLQ (replay, a second dead-lettering) drops them
DLQ_ERROR_HEADERS = frozenset({
    H_ERROR_CLASS, H_ERROR_MESSAGE, H_FAILED_AT, H_ATTEMPTS, H_ORIGINAL_TOPIC, H_ORIGINAL_PARTITION, H_ORIGINAL_OFFSET,
})

# --- Stripe ---------------------------------------------------------------------------------------------------
STRIPE_API_VERSION = "2026-04-22.preview"
#: Stripe retries failed deliveries for 3 days, so a 503 loses nothing; this is the hint we give it
RETRY_AFTER_SECONDS = 5

# --- limits ---------------------------------------------------------------------------------------------------
#: Stripe events are a few KiB; 1 MiB leaves room for big snapshot events while bounding memory per request
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: webhook bodies being read at once may hold this much memory together; beyond it, 503 (Stripe retries)
DEFAULT_MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024
#: client connections one HTTP server keeps (fewer if the descriptor limit is lower)
DEFAULT_MAX_CONNECTIONS = 1000
#: a client must send a whole request head within this many seconds of connecting (slow-loris bound)
DEFAULT_HEAD_TIMEOUT_S = 10.0
#: a body must be complete this many seconds after its first piece (a Stripe delivery's comes with its head); the
#: HTTP server cuts off one that never starts a sweep later (serving.http_limits)
DEFAULT_BODY_TIMEOUT_S = 10.0
#: Stripe's own libraries use 300 s; we also reject timestamps this far in the future
DEFAULT_SIGNATURE_TOLERANCE_S = 300
#: a publish that has not been acknowledged by then is answered 503 so Stripe retries
DEFAULT_PUBLISH_TIMEOUT_S = 5.0
#: Stripe allows 25 req/s in sandbox mode (100 in live mode)
DEFAULT_STRIPE_MAX_RPS = 25.0
#: the share of the key's limit this service leaves to the platform's other calls with the same key
DEFAULT_STRIPE_HEADROOM = 0.1
#: partitions of each topic in the embedded PostgreSQL log; consumers in a group split these
DEFAULT_EMBEDDED_PARTITIONS = 4
#: most records the PostgreSQL log's writer holds before a publish fails at once (the ingress answers 503): a few
#: seconds of a busy ingress, so a short hiccup costs no 503s while a stalled write cannot grow memory without end
DEFAULT_LOG_QUEUE_RECORDS = 10_000
#: most bytes of bodies that writer holds: 32 bodies at the 1 MiB body limit, thousands of ordinary events
DEFAULT_LOG_QUEUE_BYTES = 32 * 1024 * 1024
#: the PostgreSQL log turns unready once a write has been pending this long (a group commit takes milliseconds)
DEFAULT_LOG_STALLED_AFTER_S = 2.0
