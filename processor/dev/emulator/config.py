"""What the emulator can be told: fixed settings (`EmulatorConfig`) and knobs that change at run time."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from processor.dev.emulator import ids

#: first preview API version that has claimable sandboxes; later previews (the SDK sends its own) are accepted
MIN_PREVIEW_VERSION = "2026-04-22"
#: Stripe gives an onboarding link 7 days and an unclaimed sandbox 60 days
LINK_LIFETIME_DAYS = 7
SANDBOX_LIFETIME_DAYS = 60
#: idempotency keys are remembered for 24 hours, as on Stripe
IDEMPOTENCY_WINDOW_HOURS = 24
#: header that carries the per-run control token on /_emulator/* requests
CONTROL_TOKEN_HEADER = "X-Emulator-Token"  # noqa: S105 - a header name, not a secret
#: host names that always reach a loopback-bound emulator
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def random_api_key() -> str:
    """A fresh test key for one run: a fixed, well-known key would let any local page call the API."""
    return f"sk_test_emulator_{ids.random_token(32)}"


def random_control_token() -> str:
    return f"emutok_{ids.random_token(40)}"


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Knobs:
    """Behaviour that a test or the control API changes while the emulator runs."""

    #: probability that a delivery is sent a second time (independently scheduled)
    duplicate_rate: float = 0.0
    #: each delivery waits a random 0..window seconds first, so close events arrive in any order
    reorder_window_s: float = 0.0
    #: fixed wait before the first attempt of every delivery
    delivery_latency_s: float = 0.0
    #: fixed wait before the API answers
    api_latency_s: float = 0.0
    #: probability that an API request fails with one of `api_error_statuses` (`Stripe-Should-Retry: true`)
    api_error_rate: float = 0.0
    api_error_statuses: tuple[int, ...] = (429, 500)
    #: API requests per second per key, like a Stripe sandbox (25); 0 turns the limit off
    rate_limit_rps: float = 25.0
    #: off = webhooks are dropped (recorded as such) and only GET /v2/core/events can recover them
    delivery_enabled: bool = True
    #: retry schedule after a non-2xx answer or a timeout: base * 2**(n-1), capped, up to max attempts
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    max_attempts: int = 8
    delivery_timeout_s: float = 10.0
    #: `v2.core.claimable_sandbox.expiring` is sent this long before an unclaimed sandbox expires
    expiring_notice_s: float = 7 * 24 * 3600.0
    #: "sandbox_account": events carry the sandbox's account as `context`; "none": context is null
    event_context: str = "sandbox_account"
    #: GET of a sandbox answers 404 for this long after each change of it: Stripe's read-after-write lag, longer
    #: than the consumer's not-found retries (its events are dead-lettered, and replayed once it has passed)
    read_lag_s: float = 0.0

    def updated(self, changes: Mapping[str, Any]) -> Knobs:
        """A copy with `changes` applied; raise ValueError naming the first bad knob."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
        values = dict(changes)
        if "api_error_statuses" in values:
            values["api_error_statuses"] = tuple(int(s) for s in values["api_error_statuses"])
        candidate = replace(self, **values)
        candidate.validate()
        return candidate

    def validate(self) -> None:
        for name in ("duplicate_rate", "api_error_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1")
        for name in (
            "reorder_window_s",
            "delivery_latency_s",
            "api_latency_s",
            "rate_limit_rps",
            "retry_base_s",
            "retry_max_s",
            "expiring_notice_s",
            "read_lag_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        if not isinstance(self.delivery_timeout_s, int | float) or self.delivery_timeout_s <= 0:
            raise ValueError("delivery_timeout_s must be > 0")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError("max_attempts must be an integer >= 1")
        if not isinstance(self.delivery_enabled, bool):
            raise ValueError("delivery_enabled must be true or false")
        if not self.api_error_statuses or any(s not in (429, 500, 502, 503) for s in self.api_error_statuses):
            raise ValueError("api_error_statuses must be a non-empty list of 429, 500, 502, 503")
        if self.event_context not in ("sandbox_account", "none"):
            raise ValueError("event_context must be 'sandbox_account' or 'none'")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["api_error_statuses"] = list(self.api_error_statuses)
        return data


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A webhook endpoint to register at start-up; `secret=None` lets the emulator make one."""

    url: str
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Fixed settings of one emulator instance."""

    host: str = "127.0.0.1"
    #: 0 = pick a free port (the in-process runner reports the one it got)
    port: int = 0
    #: bearer keys the API accepts; each must look like a test secret key (`sk_test_...`); random by default
    api_keys: tuple[str, ...] = field(default_factory=lambda: (random_api_key(),), repr=False)
    #: required in the X-Emulator-Token header on /_emulator/* control requests; random per run by default
    control_token: str = field(default_factory=random_control_token, repr=False)
    #: binding beyond loopback exposes the control endpoints to the network, so it must be asked for
    allow_remote: bool = False
    #: host names (Host header) the emulator answers to besides loopback, the bind host and the public URL's
    allowed_hosts: tuple[str, ...] = ()
    #: where users reach the emulator (onboarding links point here); default http://host:port
    public_url: str | None = None
    endpoints: tuple[EndpointSpec, ...] = ()
    knobs: Knobs = field(default_factory=Knobs)
    #: seed of the random source behind the knobs (duplicates, reordering, injected errors)
    seed: int | None = None
    #: how often expiry is checked against the clock while time passes by itself
    tick_interval_s: float = 1.0
    #: concurrent webhook requests in flight
    delivery_concurrency: int = 16
    #: keep sandboxes and events in this JSON file: loaded at start, written every `snapshot_interval_s` and
    #: at stop (None: the emulator starts empty and forgets everything when it stops)
    state_file: Path | None = None
    snapshot_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ValueError("at least one API key is required")
        for key in self.api_keys:
            if not key.startswith(("sk_test_", "rk_test_")):
                raise ValueError("API keys must be test keys (sk_test_... or rk_test_...)")
        if len(self.control_token) < 16:
            raise ValueError("the control token must be at least 16 characters")
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host}: the emulator's control endpoints would be reachable from "
                "other machines; bind to 127.0.0.1 or pass --allow-remote"
            )
        self.knobs.validate()
