"""`POST /v1/sandboxes`, `GET /v1/sandboxes/{id}` and `GET /v1/sandboxes`: the operator-facing sandbox API.

Create. The caller must send an `Idempotency-Key` header (400 without one): a create that times out can then
be retried without making a second sandbox. We derive the key sent to Stripe as
HMAC(signing_key, caller's token fingerprint + header), so two callers' keys never collide and the header
alone reveals nothing. The same key with other parameters is refused (422).

The refresh URL must be given to Stripe on create, but it carries the sandbox id, known only afterwards. So
the sandbox is created with a provisional refresh URL and its link is renewed at once with the right one
(Stripe's renew takes `onboarding_link_details.refresh_url`); the link we return is the renewed one, and the
provisional one was never shown to anybody. Both calls use keys derived from the caller's, so a retry replays
both and returns the same sandbox and the same link.

API keys. Stripe returns the sandbox's API keys only in the create response. They are passed through to the
caller, never logged, and NOT stored: shown once. Within Stripe's idempotency window (24 h) a retry replays
Stripe's response, keys included, so a caller that lost the first answer still gets them; after that window
(we stop at 23 h to stay clear of its edge) a retry answers 200 from our database with `api_keys: null`
instead of calling Stripe, which would create a second sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from processor.api.auth import Principal
from processor.api.refresh import refresh_url
from processor.api.registration import register_created
from processor.api.responses import json_response, problem
from processor.api.store import ApiStore
from processor.consumer.applier import Applier
from processor.lifecycle import State
from processor.paging import parse_limit
from processor.settings import Secret
from processor.stripe_api.client import StripeApi

log = logging.getLogger("processor.api")

#: a replay from Stripe is trusted only this long after the first create (Stripe keeps keys for 24 h)
REPLAY_WINDOW = timedelta(hours=23)
#: Stripe accepts idempotency keys up to 255 characters; ours are shorter, the caller's are capped
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_PAGE = 20
_CREATE_FIELDS = frozenset({"email", "country", "name", "app_channel", "enable_mcp_access"})
#: never stored or logged: the answer carries the sandbox's secret keys
_NO_STORE = {"Cache-Control": "no-store"}


class InvalidBody(ValueError):
    """A create body whose JSON is fine but whose fields are not (422)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def create_params(body: dict[str, Any]) -> dict[str, Any]:
    """Stripe's create parameters from our body: {email, country, name?, app_channel?, enable_mcp_access?}."""
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        raise InvalidBody(unknown[0], f"unknown field {unknown[0]!r}")
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        raise InvalidBody("email", "email must be an email address")
    country = body.get("country")
    if not isinstance(country, str) or len(country) != 2 or not country.isascii() or not country.isalpha():
        raise InvalidBody("country", "country must be a two-letter ISO 3166-1 code")
    prefill = {"email": email, "country": country.upper()}
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            raise InvalidBody("name", "name must be a string of 1 to 100 characters")
        prefill["name"] = name
    app_channel = body.get("app_channel", "public")
    if app_channel not in ("public", "testing"):
        raise InvalidBody("app_channel", "app_channel must be 'public' or 'testing'")
    mcp = body.get("enable_mcp_access", False)
    if not isinstance(mcp, bool):
        raise InvalidBody("enable_mcp_access", "enable_mcp_access must be true or false")
    return {"app_channel": app_channel, "enable_mcp_access": mcp, "prefill": prefill}


def stripe_idempotency_key(key: Secret, principal: Principal, header: str) -> str:
    """The key sent to Stripe for a caller's `Idempotency-Key`: deterministic, per caller, opaque."""
    message = b"sandbox_create:" + principal.fingerprint.encode() + b":" + header.encode()
    return "sbx-" + hmac.new(key.reveal().encode(), message, hashlib.sha256).hexdigest()


async def _create_request(request: Request) -> tuple[str, dict[str, Any]] | Response:
    """The Idempotency-Key and the creation parameters of a POST /v1/sandboxes, or the problem answer to it."""
    header = request.headers.get("idempotency-key", "").strip()
    if not header:
        return problem(400, "idempotency_key_required", "Send an Idempotency-Key header (e.g. a UUID).")
    if not _valid_header(header):
        return problem(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters.")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return problem(400, "invalid_json", "The body must be a JSON object.")
    if not isinstance(body, dict):
        return problem(400, "invalid_json", "The body must be a JSON object.")
    try:
        return header, create_params(body)
    except InvalidBody as exc:
        return problem(422, "invalid_parameter", str(exc), param=exc.param)


def _created_answer(
    created: dict[str, Any], renewed: dict[str, Any], signed: str, state: State | None
) -> dict[str, Any]:
    """The 201 body: the sandbox, its onboarding link, and its API keys."""
    link = renewed.get("onboarding_link_details") or {}
    details = created.get("sandbox_details") or {}
    return {
        "id": str(created["id"]),
        "object": "sandbox",
        "state": str(state or State.UNCLAIMED),
        "onboarding_url": link.get("url"),
        "onboarding_url_expires_at": link.get("expires_at"),
        "refresh_url": signed,
        "expires_at": created.get("expires_at"),
        "sandbox_account": details.get("account"),
        # shown once: not stored, never logged (see the module docstring)
        "api_keys": details.get("api_keys"),
    }


def _valid_header(value: str) -> bool:
    return 0 < len(value) <= MAX_IDEMPOTENCY_KEY and value.isascii() and value.isprintable()


class SandboxEndpoints:
    """The handlers of /v1/sandboxes, bound to the store, Stripe and the signing key."""

    def __init__(self, store: ApiStore, applier: Applier, stripe: StripeApi, key: Secret, public_url: str) -> None:
        self.store = store
        self.applier = applier
        self.stripe = stripe
        self.key = key
        self.public_url = public_url

    async def create(self, request: Request, principal: Principal) -> Response:
        read = await _create_request(request)
        if isinstance(read, Response):
            return read
        header, params = read
        stripe_key = stripe_idempotency_key(self.key, principal, header)
        fingerprint = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
        previous, existed = await self.store.begin_create(stripe_key, fingerprint)
        if not hmac.compare_digest(previous.fingerprint, fingerprint):
            return problem(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used with other parameters; use a new key for a new sandbox.",
                param="Idempotency-Key",
            )
        replayed = existed and previous.sandbox_id is not None
        if previous.sandbox_id is not None and previous.completed_at is not None:
            if datetime.now(UTC) - previous.completed_at > REPLAY_WINDOW:
                return await self._from_database(previous.sandbox_id)
        created, renewed, signed = await self._create_at_stripe(params, stripe_key)
        sandbox_id = str(created["id"])
        state = await self.store.state(sandbox_id)
        if state is None:
            await register_created(self.applier, self.stripe, {**created, **_link_only(renewed)})
            state = await self.store.state(sandbox_id)
        await self.store.complete_create(stripe_key, sandbox_id)
        log.info("created sandbox %s (replayed=%s)", sandbox_id, replayed)
        headers = {**_NO_STORE, "Location": f"/v1/sandboxes/{sandbox_id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return json_response(_created_answer(created, renewed, signed, state), 201, headers)

    async def _create_at_stripe(
        self, params: dict[str, Any], stripe_key: str
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """Create the sandbox at Stripe, then renew its onboarding link with our signed refresh URL; return what
        Stripe answered to each, and that URL."""
        # provisional: replaced by the renew below before anybody sees a link (see the module docstring)
        params["onboarding_link_details"] = {"refresh_url": f"{self.public_url}/sandboxes/onboarding"}
        created = await self.stripe.create_sandbox(params, idempotency_key=stripe_key)
        sandbox_id = str(created["id"])
        signed = refresh_url(self.public_url, self.key, sandbox_id)
        renewed = await self.stripe.renew_onboarding_link(
            sandbox_id, {"onboarding_link_details": {"refresh_url": signed}}, idempotency_key=f"{stripe_key}-link"
        )
        return created, renewed, signed

    async def _from_database(self, sandbox_id: str) -> Response:
        """A retry after Stripe's idempotency window: what we know, without keys (they were shown once)."""
        sandbox = await self.store.sandbox(sandbox_id)
        if sandbox is None:
            return problem(409, "sandbox_unknown", "The sandbox of this Idempotency-Key is no longer known.")
        answer = {
            "id": sandbox_id,
            "object": "sandbox",
            "state": sandbox["state"],
            "onboarding_url": None,
            "refresh_url": refresh_url(self.public_url, self.key, sandbox_id),
            "sandbox_account": (sandbox.get("stripe") or {}).get("sandbox_account"),
            "api_keys": None,
        }
        return json_response(answer, 200, {**_NO_STORE, "Idempotent-Replayed": "true"})

    async def retrieve(self, request: Request, principal: Principal) -> Response:
        sandbox_id = request.path_params["id"]
        sandbox = await self.store.sandbox(sandbox_id)
        if sandbox is None:
            return problem(404, "sandbox_not_found", f"No sandbox {sandbox_id!r}.")
        sandbox["refresh_url"] = refresh_url(self.public_url, self.key, sandbox_id)
        return json_response(sandbox)

    async def list(self, request: Request, principal: Principal) -> Response:
        query = request.query_params
        state: State | None = None
        if raw_state := query.get("state"):
            try:
                state = State(raw_state)
            except ValueError:
                return problem(400, "invalid_state", f"state must be one of {', '.join(State)}.", param="state")
        limit = parse_limit(query.get("limit"), DEFAULT_PAGE)  # InvalidPage: 400 (`responses.guarded`)
        page = await self.store.page(state, query.get("cursor") or None, limit)
        return json_response(page.as_dict())


def _link_only(renewed: dict[str, Any]) -> dict[str, Any]:
    link = renewed.get("onboarding_link_details")
    return {"onboarding_link_details": link} if link is not None else {}
