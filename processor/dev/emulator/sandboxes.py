"""The claimable-sandbox lifecycle: what the API and the Dashboard user do, and the events each step emits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from processor.dev.emulator import errors, ids
from processor.dev.emulator.clock import Clock
from processor.dev.emulator.config import LINK_LIFETIME_DAYS, SANDBOX_LIFETIME_DAYS, Knobs
from processor.dev.emulator.store import EventRecord, SandboxRecord, Store
from processor.dev.emulator.webhooks import Deliverer

SANDBOX_OBJECT = "v2.core.claimable_sandbox"
#: the Stripe App that the platform pre-installs in every sandbox (v1 events about it carry this object)
APPLICATION = {"id": "ca_emulatorPlatformApp0001", "object": "application", "name": "Emulated platform app"}
#: API version stamped on v1 snapshot events
SNAPSHOT_API_VERSION = "2026-04-22.preview"


def _conflict(message: str, code: str = "invalid_state") -> errors.ApiError:
    return errors.ApiError(409, "invalid_request_error", code, message)


@dataclass(frozen=True, slots=True)
class _NewSandbox:
    """The valid parameters of a create."""

    app_channel: str
    enable_mcp_access: bool
    refresh_url: str
    email: str
    country: str
    name: str

class Sandboxes:
    """Operations on sandboxes; every change is stored, then emitted as an event and handed to delivery."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        deliverer: Deliverer,
        knobs: Callable[[], Knobs],
        public_url: Callable[[], str],
    ) -> None:
        self._store = store
        self._clock = clock
        self._deliverer = deliverer
        self._knobs = knobs
        self._public_url = public_url
        #: monotonic time of each sandbox's last change (for the `read_lag_s` knob)
        self._changed: dict[str, float] = {}

    # --- API -----------------------------------------------------------------------------------------
    def create(
        self, params: dict[str, Any], reason: dict[str, Any] | None = None
    ) -> tuple[SandboxRecord, dict[str, str | None]]:
        """POST /v2/core/claimable_sandboxes: validate like Stripe, store, emit `.created`."""
        valid = self._validate_create(params)
        now = self._clock.now()
        token = ids.random_token(40)
        record = SandboxRecord(
            id=ids.sandbox_id(),
            account=ids.account_id(),
            app_channel=valid.app_channel,
            enable_mcp_access=valid.enable_mcp_access,
            prefill={"country": valid.country.upper(), "email": valid.email, "name": valid.name},
            created=now,
            expires_at=now + timedelta(days=SANDBOX_LIFETIME_DAYS),
            link_token=token,
            link_url=self._link_url(token),
            link_expires_at=now + timedelta(days=LINK_LIFETIME_DAYS),
            refresh_url=valid.refresh_url,
        )
        keys = ids.api_keys(record.account, record.enable_mcp_access)
        self._store.add_sandbox(record)
        self._emit_v2(record, "created", reason)
        return record, keys

    def _validate_create(self, params: dict[str, Any]) -> _NewSandbox:
        """The parameters of a create, checked in the order Stripe checks them (the first problem is the error)."""
        app_channel = params.get("app_channel", "public")
        if app_channel not in ("public", "testing"):
            raise errors.invalid("app_channel must be one of: public, testing", param="app_channel")
        if "enable_mcp_access" not in params:
            raise errors.missing("enable_mcp_access")
        if not isinstance(params["enable_mcp_access"], bool):
            raise errors.invalid("enable_mcp_access must be a boolean", param="enable_mcp_access")
        link = params.get("onboarding_link_details")
        if not isinstance(link, dict) or "refresh_url" not in link:
            raise errors.missing("onboarding_link_details.refresh_url")
        refresh_url = self._valid_url(link["refresh_url"], "onboarding_link_details.refresh_url")
        prefill = params.get("prefill")
        if not isinstance(prefill, dict):
            raise errors.missing("prefill")
        for name in ("email", "country"):
            if not isinstance(prefill.get(name), str) or not prefill[name]:
                raise errors.missing(f"prefill.{name}")
        if "@" not in prefill["email"]:
            raise errors.invalid("prefill.email must be an email address", param="prefill.email")
        country = prefill["country"]
        if len(country) != 2 or not country.isalpha():
            raise errors.invalid(
                "prefill.country must be a two-letter ISO 3166-1 code", param="prefill.country"
            )
        name = prefill.get("name", "Sandbox")
        if not isinstance(name, str):
            raise errors.invalid("prefill.name must be a string", param="prefill.name")
        unknown = sorted(
            set(params) - {"app_channel", "enable_mcp_access", "onboarding_link_details", "prefill"}
        )
        if unknown:
            raise errors.invalid(
                f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
            )
        return _NewSandbox(app_channel, params["enable_mcp_access"], refresh_url, prefill["email"], country, name)

    def get(self, sandbox_id: str, context: str | None = None) -> SandboxRecord:
        """The sandbox as seen from `context` (Stripe-Context): the platform, the sandbox or its owner."""
        record = self._store.sandbox(sandbox_id)
        if record is None or (context and context not in (record.account, record.owner_account)):
            raise errors.not_found("claimable sandbox", sandbox_id)
        return record

    def read(self, sandbox_id: str, context: str | None = None) -> SandboxRecord:
        """GET through the API: `get`, except that a sandbox changed less than `read_lag_s` ago is not found."""
        record = self.get(sandbox_id, context)
        lag = self._knobs().read_lag_s
        if lag and time.monotonic() - self._changed.get(sandbox_id, float("-inf")) < lag:
            raise errors.not_found("claimable sandbox", sandbox_id)
        return record

    def renew_link(
        self, sandbox_id: str, params: dict[str, Any], context: str | None = None
    ) -> SandboxRecord:
        """POST .../renew_onboarding_link: a new link for 7 more days; the old link stops working."""
        record = self.get(sandbox_id, context)
        if record.status not in ("unclaimed", "claimed"):
            raise errors.invalid(
                "The onboarding link can only be renewed for an unclaimed or claimed sandbox; "
                f"this one is {record.status}.",
                code="invalid_status",
            )
        unknown = sorted(set(params) - {"onboarding_link_details"})
        if unknown:
            raise errors.invalid(
                f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
            )
        link = params.get("onboarding_link_details")
        if link is not None:
            if not isinstance(link, dict) or "refresh_url" not in link:
                raise errors.missing("onboarding_link_details.refresh_url")
            record.refresh_url = self._valid_url(link["refresh_url"], "onboarding_link_details.refresh_url")
        token = ids.random_token(40)
        expires = self._clock.now() + timedelta(days=LINK_LIFETIME_DAYS)
        self._store.replace_link(record, token, self._link_url(token), expires)
        return record

    # --- what the user does in the Dashboard ---------------------------------------------------------
    def claim(
        self, sandbox_id: str, into: Literal["new", "existing"], account: str | None = None
    ) -> SandboxRecord:
        """The user follows the onboarding link and claims into a new or an existing Stripe account."""
        record = self._require(sandbox_id, "unclaimed", "claim")
        if self._clock.now() >= record.link_expires_at:
            raise _conflict(
                "The onboarding link has expired; the user is sent to refresh_url for a new one.",
                code="onboarding_link_expired",
            )
        now = self._clock.now()
        if into == "new":
            record.owner_account = ids.account_id()
            record.install_status = "pending_onboarding"
        else:
            if account is None:
                account = ids.account_id()
            if account not in self._store.accounts:
                self._store.accounts.append(account)
            record.owner_account = account
            record.install_status = "pending_install"
        record.status, record.claimed_at = "claimed", now
        self._emit_v2(record, "claimed")
        return record

    def submit_application(self, sandbox_id: str) -> SandboxRecord:
        """The new account's application is submitted: onboarding done, the app can now be installed."""
        record = self._require(sandbox_id, "claimed", "submit the account application for")
        if record.install_status != "pending_onboarding":
            raise _conflict(
                f"Only a sandbox pending onboarding has an application to submit ({record.install_status})."
            )
        record.install_status = "pending_install"
        self._store.accounts.append(record.owner_account or "")
        self._emit_v2(record, "updated")
        return record

    def install_app(self, sandbox_id: str, go_live: bool = True) -> SandboxRecord:
        """The user installs the platform's app in the live account; by default the sandbox goes live too."""
        record = self._require(sandbox_id, "claimed", "install the app on")
        if record.install_status != "pending_install":
            raise _conflict(f"The app can be installed only when pending_install ({record.install_status}).")
        record.install_status = "installed"
        record.app_authorized = True
        if go_live:
            record.status = "live"
        self._emit_v2(record, "updated")
        self._emit_v1(record, "account.application.authorized")
        return record

    def go_live(self, sandbox_id: str) -> SandboxRecord:
        """A sandbox whose app is installed goes live (separate step only when install used go_live=false)."""
        record = self._require(sandbox_id, "claimed", "take live")
        if record.install_status != "installed":
            raise _conflict("Only a sandbox with the app installed can go live.")
        record.status = "live"
        self._emit_v2(record, "updated")
        return record

    def expire(self, sandbox_id: str) -> SandboxRecord:
        """Expire an unclaimed sandbox now (what the 60-day timer does)."""
        record = self._require(sandbox_id, "unclaimed", "expire")
        self._expire(record)
        return record

    def uninstall_app(self, sandbox_id: str) -> SandboxRecord:
        """The owner uninstalls the platform's app: Stripe sends the v1 `account.application.deauthorized`."""
        record = self.get(sandbox_id)
        if record.install_status != "installed" or not record.app_authorized:
            raise _conflict("The app is not installed on this sandbox's account.")
        record.app_authorized = False
        self._emit_v1(record, "account.application.deauthorized")
        return record

    def tick(self) -> int:
        """Apply the passage of time (`.expiring` notices, expiry of unclaimed sandboxes); returns changes."""
        now = self._clock.now()
        notice = timedelta(seconds=self._knobs().expiring_notice_s)
        changes = 0
        for record in list(self._store.sandboxes.values()):
            if record.status != "unclaimed":
                continue
            if not record.expiring_sent and now >= record.expires_at - notice:
                record.expiring_sent = True
                self._emit_v2(record, "expiring")
                changes += 1
            if now >= record.expires_at:
                self._expire(record)
                changes += 1
        return changes

    # --- helpers -------------------------------------------------------------------------------------
    def _expire(self, record: SandboxRecord) -> None:
        record.status = "expired"
        self._emit_v2(record, "expired")

    def _require(self, sandbox_id: str, status: str, action: str) -> SandboxRecord:
        record = self.get(sandbox_id)
        if record.status != status:
            raise _conflict(f"Cannot {action} a sandbox that is {record.status} (needs {status}).")
        return record

    def _link_url(self, token: str) -> str:
        return f"{self._public_url()}/_emulator/onboard/{token}"

    @staticmethod
    def _valid_url(raw: object, param: str) -> str:
        if not isinstance(raw, str) or not raw.startswith(("https://", "http://")):
            raise errors.invalid(f"{param} must be an http(s) URL", param=param)
        return raw

    def _context(self, record: SandboxRecord) -> str | None:
        return record.account if self._knobs().event_context == "sandbox_account" else None

    def _emit_v2(
        self, record: SandboxRecord, action: str, reason: dict[str, Any] | None = None
    ) -> EventRecord:
        self._changed[record.id] = time.monotonic()
        event = EventRecord(
            seq=self._store.next_seq(),
            id=ids.event_id(),
            type=f"{SANDBOX_OBJECT}.{action}",
            created=self._clock.now(),
            context=self._context(record),
            related_object={
                "id": record.id,
                "type": SANDBOX_OBJECT,
                "url": f"/v2/core/claimable_sandboxes/{record.id}",
            },
            reason=reason,
        )
        self._store.add_event(event)
        self._deliverer.publish(event.id, event.type, _encode(event.notification()))
        return event

    def _emit_v1(self, record: SandboxRecord, event_type: str) -> EventRecord:
        account = record.owner_account if record.install_status == "installed" else record.account
        created = self._clock.now()
        event_id = ids.v1_event_id()
        payload = {
            "id": event_id,
            "object": "event",
            "account": account,
            "api_version": SNAPSHOT_API_VERSION,
            "created": int(created.timestamp()),
            "data": {"object": dict(APPLICATION)},
            "livemode": False,
            "pending_webhooks": len(self._deliverer.endpoints()),
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        event = EventRecord(
            self._store.next_seq(), event_id, event_type, created, context=account, v1_payload=payload
        )
        self._store.add_event(event)
        self._deliverer.publish(event.id, event.type, _encode(payload))
        return event


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
