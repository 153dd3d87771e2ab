"""Everything the emulator remembers, as plain records in one class so another backend could persist them.

The store holds data and answers queries; the rules of the lifecycle live in `sandboxes.py`.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from processor.dev.emulator.clock import format_timestamp

SandboxStatus = Literal["unclaimed", "claimed", "expired", "live"]
InstallStatus = Literal["pending_onboarding", "pending_install", "installed"]


@dataclass(slots=True)
class SandboxRecord:
    """One claimable sandbox with everything needed to render it and to drive it."""

    id: str
    account: str
    app_channel: str
    enable_mcp_access: bool
    prefill: dict[str, str]
    created: datetime
    expires_at: datetime
    link_token: str
    link_url: str
    link_expires_at: datetime
    refresh_url: str
    status: SandboxStatus = "unclaimed"
    claimed_at: datetime | None = None
    install_status: InstallStatus | None = None
    #: the live account the sandbox was claimed into; shown only once the app is installed (as Stripe does)
    owner_account: str | None = None
    expiring_sent: bool = False
    app_authorized: bool = True

    def to_api(self, api_keys: dict[str, str | None] | None = None) -> dict[str, Any]:
        """The `v2.core.claimable_sandbox` object; `api_keys` is passed only by the create response."""
        owner: dict[str, Any] | None = None
        if self.install_status is not None:
            owner = {
                "account": self.owner_account if self.install_status == "installed" else None,
                "app_install_status": self.install_status,
            }
        return {
            "id": self.id,
            "object": "v2.core.claimable_sandbox",
            "app_channel": self.app_channel,
            "claimed_at": format_timestamp(self.claimed_at) if self.claimed_at else None,
            "created": format_timestamp(self.created),
            "expires_at": format_timestamp(self.expires_at)
            if self.status in ("unclaimed", "expired")
            else None,
            "livemode": False,
            "onboarding_link_details": {
                "expires_at": format_timestamp(self.link_expires_at),
                "refresh_url": self.refresh_url,
                "url": self.link_url,
            },
            "owner_details": owner,
            "prefill": dict(self.prefill),
            "sandbox_details": {"account": self.account, "api_keys": api_keys},
            "status": self.status,
        }


@dataclass(slots=True)
class EventRecord:
    """An event Stripe would keep: a v2 thin event, or a v1 snapshot event (`payload` holds the v1 body)."""

    seq: int
    id: str
    type: str
    created: datetime
    context: str | None = None
    related_object: dict[str, str] | None = None
    reason: dict[str, Any] | None = None
    v1_payload: dict[str, Any] | None = None

    @property
    def is_v2(self) -> bool:
        return self.v1_payload is None

    def notification(self) -> dict[str, Any]:
        """The thin event notification body a webhook endpoint receives (v2 only)."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "v2.core.event",
            "type": self.type,
            "created": format_timestamp(self.created),
            "livemode": False,
            "context": self.context,
            "reason": self.reason,
        }
        if self.related_object is not None:
            body["related_object"] = dict(self.related_object)
        return body

    def to_api(self) -> dict[str, Any]:
        """The full event as `GET /v2/core/events/{id}` (or `/v1/events/{id}` for v1) returns it."""
        if self.v1_payload is not None:
            return dict(self.v1_payload)
        return {**self.notification(), "changes": None}


@dataclass(slots=True)
class IdempotencyRecord:
    """A POST answered under an `Idempotency-Key`, replayed verbatim for the same request."""

    fingerprint: str
    status: int
    body: bytes
    created: datetime


@dataclass(slots=True)
class Store:
    """In-memory state of one emulator: sandboxes, accounts, events in creation order, idempotency keys."""

    sandboxes: dict[str, SandboxRecord] = field(default_factory=dict)
    link_tokens: dict[str, str] = field(default_factory=dict)
    #: links replaced by a renewal: still known, so a visit can be sent to the sandbox's refresh_url
    replaced_links: dict[str, str] = field(default_factory=dict)
    #: live accounts that exist before any claim ("claim into an existing account" picks from these)
    accounts: list[str] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    events_by_id: dict[str, EventRecord] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)

    # --- sandboxes -----------------------------------------------------------------------------------
    def add_sandbox(self, record: SandboxRecord) -> None:
        self.sandboxes[record.id] = record
        self.link_tokens[record.link_token] = record.id

    def sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        return self.sandboxes.get(sandbox_id)

    def replace_link(self, record: SandboxRecord, token: str, url: str, expires_at: datetime) -> None:
        """Point the sandbox at a new onboarding link; the old link stops working (Stripe invalidates it)."""
        if self.link_tokens.pop(record.link_token, None) is not None:
            self.replaced_links[record.link_token] = record.id
        record.link_token, record.link_url, record.link_expires_at = token, url, expires_at
        self.link_tokens[token] = record.id

    def sandbox_by_link(self, token: str) -> tuple[SandboxRecord | None, bool]:
        """The sandbox a link belongs to, and whether the link is its current one (False: replaced)."""
        sandbox_id = self.link_tokens.get(token)
        if sandbox_id is not None:
            return self.sandboxes.get(sandbox_id), True
        replaced = self.replaced_links.get(token)
        return (self.sandboxes.get(replaced) if replaced else None), False

    # --- events --------------------------------------------------------------------------------------
    def next_seq(self) -> int:
        return len(self.events) + 1

    def add_event(self, record: EventRecord) -> None:
        self.events.append(record)
        self.events_by_id[record.id] = record

    def event(self, event_id: str) -> EventRecord | None:
        return self.events_by_id.get(event_id)

    def list_events(
        self,
        *,
        v2: bool,
        before_seq: int | None,
        limit: int,
        created_gt: datetime | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        created_lte: datetime | None = None,
        types: frozenset[str] = frozenset(),
        object_id: str | None = None,
        context: str | None = None,
    ) -> tuple[list[EventRecord], bool]:
        """Events newest first, older than `before_seq`; returns the page and whether more follow."""
        end = (
            len(self.events) if before_seq is None else bisect.bisect_left(self.events, before_seq, key=_seq)
        )
        page: list[EventRecord] = []
        for index in range(end - 1, -1, -1):
            record = self.events[index]
            if record.is_v2 != v2:
                continue
            if created_gt and not record.created > created_gt:
                continue
            if created_gte and not record.created >= created_gte:
                continue
            if created_lt and not record.created < created_lt:
                continue
            if created_lte and not record.created <= created_lte:
                continue
            if types and record.type not in types:
                continue
            if object_id and (record.related_object or {}).get("id") != object_id:
                continue
            if context is not None and record.context != context:
                continue
            if len(page) == limit:
                return page, True
            page.append(record)
        return page, False

    # --- idempotency ---------------------------------------------------------------------------------
    def idempotent(self, api_key: str, key: str) -> IdempotencyRecord | None:
        return self.idempotency.get((_key_scope(api_key), key))

    def remember(self, api_key: str, key: str, record: IdempotencyRecord) -> None:
        self.idempotency[(_key_scope(api_key), key)] = record

    def forget_idempotency_before(self, cutoff: datetime) -> None:
        for scope_key in [k for k, v in self.idempotency.items() if v.created < cutoff]:
            del self.idempotency[scope_key]


def _seq(record: EventRecord) -> int:
    return record.seq


def _key_scope(api_key: str) -> str:
    # keys are scoped per API key like Stripe scopes them per account; store a digest, not the key itself
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
