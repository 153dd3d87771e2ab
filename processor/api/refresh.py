"""The refresh URL Stripe sends a user to when their onboarding link expired or was replaced.

`GET /sandboxes/{id}/onboarding?sig=...` renews the link through Stripe and answers 303 to the new one. It is
public (the user's browser follows it), so it is protected by its signature instead of a token:
`sig = base64url(HMAC-SHA256(signing_key, "refresh_url:" + id))` without padding (the prefix keeps these
signatures apart from anything else signed with the same key), compared in constant time; nobody without the
key can make a working URL for another id (403). Visits are rate-limited per sandbox (429 + Retry-After;
the limit is kept in this process's memory, see `processor.tokenbucket`). A sandbox that is expired, claimed or
live gets a short page saying so, never a Stripe error; the processor's own state is checked first, and Stripe's
answer decides when the two disagree (a webhook not applied yet).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import uuid
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from processor.api import pages
from processor.api.store import ApiStore
from processor.db.pool import DATABASE_ERRORS
from processor.errors import StripeError
from processor.lifecycle import State
from processor.settings import Secret
from processor.stripe_api.budget import Priority
from processor.stripe_api.client import StripeApi
from processor.tokenbucket import TokenBuckets

log = logging.getLogger("processor.api")

#: renewals allowed per sandbox per period: enough for a user who clicks twice, not for a loop
DEFAULT_RENEWALS = 3
DEFAULT_PERIOD_S = 60.0
_DOMAIN = b"refresh_url:"
#: a Stripe sandbox id is `csb_` + a few dozen characters; anything much longer is not one
_MAX_ID_LENGTH = 255


def sign(key: Secret, sandbox_id: str) -> str:
    """The `sig` of the refresh URL of `sandbox_id`."""
    digest = hmac.new(key.reveal().encode(), _DOMAIN + sandbox_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify(key: Secret, sandbox_id: str, sig: str) -> bool:
    """True if `sig` is the signature of `sandbox_id` (constant-time)."""
    return hmac.compare_digest(sign(key, sandbox_id).encode(), sig.encode())


def refresh_url(public_url: str, key: Secret, sandbox_id: str) -> str:
    """The refresh URL given to Stripe for `sandbox_id`."""
    return f"{public_url}/sandboxes/{quote(sandbox_id, safe='')}/onboarding?sig={sign(key, sandbox_id)}"


class RefreshEndpoint:
    """The request handler, bound to its store, Stripe client, key and rate limit."""

    def __init__(
        self,
        store: ApiStore,
        stripe: StripeApi,
        key: Secret,
        public_url: str,
        limit: TokenBuckets | None = None,
    ) -> None:
        self.store = store
        self.stripe = stripe
        self.key = key
        self.public_url = public_url
        self.limit = limit or TokenBuckets.per_period(DEFAULT_RENEWALS, DEFAULT_PERIOD_S)

    async def __call__(self, request: Request) -> Response:
        sandbox_id = request.path_params["id"]
        sig = request.query_params.get("sig", "")
        if not sig or len(sandbox_id) > _MAX_ID_LENGTH or not sig.isascii() or not verify(self.key, sandbox_id, sig):
            return pages.invalid_link()
        wait_s = self.limit.take(sandbox_id)
        if wait_s > 0:
            return pages.rate_limited(max(1, math.ceil(wait_s)))
        try:
            known = await self.store.state(sandbox_id)
        except DATABASE_ERRORS as exc:
            log.warning("refresh of %s: database unavailable: %s", sandbox_id, exc)
            return pages.unavailable(5)
        if known is not None and known is not State.UNCLAIMED:
            return _page_for(known)
        return await self._renew(sandbox_id)

    async def _renew(self, sandbox_id: str) -> Response:
        # Stripe would renew the link of a claimed sandbox too, but its user has nothing left to do with it;
        # our state may lag behind Stripe's (a webhook on its way), so Stripe's status decides
        try:
            sandbox = await self.stripe.retrieve_sandbox(sandbox_id, priority=Priority.USER)
        except StripeError as exc:
            return self._failed(sandbox_id, exc)
        if sandbox.get("status") != "unclaimed":
            return self._page_for_status(sandbox_id, sandbox.get("status"))
        params = {"onboarding_link_details": {"refresh_url": refresh_url(self.public_url, self.key, sandbox_id)}}
        try:
            # each visit asks for a new link, so the key is new per visit; the client's own retries reuse it
            renewed = await self.stripe.renew_onboarding_link(
                sandbox_id, params, idempotency_key=f"refresh-{sandbox_id}-{uuid.uuid4().hex}"
            )
        except StripeError as exc:
            if exc.retriable:
                log.warning("renewing the link of %s failed, retriable: %s", sandbox_id, exc)
                return pages.unavailable(5)
            return await self._explain(sandbox_id, exc)
        url = (renewed.get("onboarding_link_details") or {}).get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            log.warning("Stripe renewed the link of %s but returned no usable URL", sandbox_id)
            return pages.failed()
        return RedirectResponse(url, 303, {"Cache-Control": "no-store"})

    async def _explain(self, sandbox_id: str, cause: StripeError) -> Response:
        """Stripe refused to renew (the sandbox changed in between): say why, from its actual status."""
        try:
            sandbox = await self.stripe.retrieve_sandbox(sandbox_id, priority=Priority.USER)
        except StripeError as exc:
            return self._failed(sandbox_id, exc)
        log.info("renewing the link of %s failed: %s", sandbox_id, cause)
        return self._page_for_status(sandbox_id, sandbox.get("status"))

    @staticmethod
    def _failed(sandbox_id: str, exc: StripeError) -> Response:
        if exc.status == 404:
            return pages.unknown()
        log.warning("fetching sandbox %s for its refresh URL failed: %s", sandbox_id, exc)
        return pages.unavailable(5) if exc.retriable else pages.failed()

    @staticmethod
    def _page_for_status(sandbox_id: str, status: object) -> Response:
        if status == "expired":
            return pages.expired()
        if status in ("claimed", "live"):
            return pages.claimed(live=status == "live")
        log.warning("sandbox %s has status %r: its link cannot be renewed", sandbox_id, status)
        return pages.failed()


def _page_for(state: State) -> Response:
    if state is State.EXPIRED:
        return pages.expired()
    return pages.claimed(live=state is State.LIVE)
