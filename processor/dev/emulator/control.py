"""Control endpoints under /_emulator: what the end user does in the Dashboard, plus the test knobs.

They change what the emulator signs and sends to the processor, so each needs the per-run control token in the
X-Emulator-Token header and takes JSON bodies only (a cross-site page can post text/plain or a form without
asking, but neither a custom header nor a JSON body). The onboarding page is the exception a browser opens from
a link: the link's own unguessable token is its capability, as on Stripe.
"""

from __future__ import annotations

import hmac
import html
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from processor.dev.emulator import errors, ids
from processor.dev.emulator.clock import format_timestamp
from processor.dev.emulator.config import CONTROL_TOKEN_HEADER
from processor.dev.emulator.state import EmulatorState

Control = Callable[[Request, EmulatorState, dict[str, Any]], Awaitable[Any]]


def _check_token(request: Request, state: EmulatorState) -> None:
    given = request.headers.get(CONTROL_TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), state.config.control_token.encode()):
        raise errors.unauthorized(
            f"The control endpoints need the emulator's control token in the {CONTROL_TOKEN_HEADER} header "
            "(printed when the emulator starts; `emulator_token` in the data directory's secrets.json)."
        )


async def _json_body(request: Request) -> dict[str, Any]:
    """The JSON object sent, {} for none; any other content type is 415 (forms and text/plain are CSRF's tools)."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    if content_type is None and not raw:
        return {}
    if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
        raise errors.ApiError(
            415, "invalid_request_error", "unsupported_media_type",
            "Control requests take a JSON body (Content-Type: application/json).",
        )  # fmt: skip
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise errors.invalid("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise errors.invalid("The request body must be a JSON object.", code="invalid_json")
    return parsed


def control(handler: Control, *, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Check the control token (unless `public`), parse an optional JSON body, run the handler, answer JSON."""

    async def run(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        request_id = ids.request_id()
        try:
            if not public:
                _check_token(request, state)
            body = await _json_body(request)
            result = await handler(request, state, body)
        except errors.ApiError as exc:
            return exc.response(request_id)
        except ValueError as exc:
            return errors.invalid(str(exc)).response(request_id)
        return result if isinstance(result, Response) else JSONResponse(result)

    return run


def _sandbox_id(request: Request) -> str:
    return str(request.path_params["id"])


async def list_sandboxes(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return {"data": [s.to_api() for s in state.store.sandboxes.values()]}


async def get_sandbox(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.sandboxes.get(_sandbox_id(request)).to_api()


async def claim(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    into = body.get("into", "new")
    if into not in ("new", "existing"):
        raise errors.invalid("into must be 'new' or 'existing'", param="into")
    account = body.get("account")
    if account is not None and (not isinstance(account, str) or not account.startswith("acct_")):
        raise errors.invalid("account must be an account id (acct_...)", param="account")
    return state.sandboxes.claim(_sandbox_id(request), into, account).to_api()


async def submit_application(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.sandboxes.submit_application(_sandbox_id(request)).to_api()


async def install_app(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    go_live = body.get("go_live", True)
    if not isinstance(go_live, bool):
        raise errors.invalid("go_live must be a boolean", param="go_live")
    return state.sandboxes.install_app(_sandbox_id(request), go_live).to_api()


async def go_live(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.sandboxes.go_live(_sandbox_id(request)).to_api()


async def expire(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.sandboxes.expire(_sandbox_id(request)).to_api()


async def uninstall_app(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.sandboxes.uninstall_app(_sandbox_id(request)).to_api()


def _clock(state: EmulatorState) -> dict[str, Any]:
    return {"now": format_timestamp(state.clock.now()), "offset_seconds": state.clock.offset.total_seconds()}


async def get_clock(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return _clock(state)


async def advance_clock(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    seconds = float(body.get("seconds", 0)) + float(body.get("days", 0)) * 86400
    if seconds <= 0:
        raise errors.invalid("give a positive 'seconds' and/or 'days'")
    changes = state.advance_clock(timedelta(seconds=seconds))
    return {**_clock(state), "changes": changes}


async def get_config(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.knobs.as_dict()


async def set_config(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.set_knobs(**body).as_dict()


async def set_delivery(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise errors.invalid("enabled must be true or false", param="enabled")
    return {"enabled": state.set_knobs(delivery_enabled=enabled).delivery_enabled}


async def list_attempts(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    attempts = state.deliverer.attempts(
        event_id=request.query_params.get("event_id"), endpoint_id=request.query_params.get("endpoint_id")
    )
    return {"data": [a.to_api() for a in attempts], "in_flight": state.deliverer.in_flight}


async def wait_deliveries(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    timeout = float(body.get("timeout", 30))
    try:
        await state.deliverer.wait_idle(timeout)
    except TimeoutError:
        raise errors.ApiError(
            408, "invalid_request_error", "timeout", f"deliveries still in flight after {timeout}s"
        ) from None
    return {"in_flight": 0}


async def list_endpoints(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return {"data": [e.to_api() for e in state.deliverer.endpoints()]}


async def add_endpoint(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise errors.invalid("url must be an http(s) URL", param="url")
    secret = body.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise errors.invalid("secret must be a non-empty string", param="secret")
    events = body.get("enabled_events") or []
    endpoint = state.add_webhook_endpoint(url, secret, frozenset(str(e) for e in events))
    return endpoint.to_api(with_secret=True)


async def delete_endpoint(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    endpoint_id = str(request.path_params["id"])
    if not state.deliverer.remove_endpoint(endpoint_id):
        raise errors.not_found("webhook endpoint", endpoint_id)
    return {"id": endpoint_id, "deleted": True}


async def roll_secret(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    endpoint_id = str(request.path_params["id"])
    if state.deliverer.endpoint(endpoint_id) is None:
        raise errors.not_found("webhook endpoint", endpoint_id)
    expires_in = float(body.get("expires_in_seconds", 24 * 3600))
    if not 0 <= expires_in <= 7 * 24 * 3600:
        raise errors.invalid("expires_in_seconds must be between 0 and 7 days", param="expires_in_seconds")
    secret = body.get("secret")
    endpoint = state.deliverer.roll_secret(endpoint_id, timedelta(seconds=expires_in), secret)
    return endpoint.to_api(with_secret=True)


async def healthz(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return {"status": "ok", "sandboxes": len(state.store.sandboxes), "events": len(state.store.events)}


# --- the onboarding page a user reaches through onboarding_link_details.url --------------------------------
_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>Claim sandbox (Stripe emulator)</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto"><h1>Claim your sandbox</h1>
<p>Sandbox <code>{id}</code> for {email} &mdash; status <b>{status}</b>{install}.</p>
{actions}<p><small>Stripe emulator: this page stands in for the Stripe Dashboard.</small></p></body></html>"""


def _button(action: str, label: str, **fields: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items())
    return (
        f'<form method="post" style="display:inline">{hidden}'
        f'<input type="hidden" name="action" value="{action}">'
        f'<button type="submit">{html.escape(label)}</button></form> '
    )


async def onboarding_page(request: Request) -> Response:
    """GET/POST the onboarding link; an expired or replaced one sends the user to refresh_url, like Stripe."""
    state: EmulatorState = request.app.state.emulator
    record, current = state.store.sandbox_by_link(str(request.path_params["token"]))
    if record is None:
        return HTMLResponse("<h1>This onboarding link is not valid.</h1>", status_code=404)
    if not current or state.clock.now() >= record.link_expires_at or record.status == "expired":
        return RedirectResponse(record.refresh_url, status_code=302)
    message = ""
    if request.method == "POST":
        # parsed by hand: starlette's form parser needs python-multipart, a dependency for one field
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        action = form.get("action", [""])[0]
        steps: dict[str, Callable[[], object]] = {
            "claim_new": lambda: state.sandboxes.claim(record.id, "new"),
            "claim_existing": lambda: state.sandboxes.claim(record.id, "existing"),
            "submit_application": lambda: state.sandboxes.submit_application(record.id),
            "install_app": lambda: state.sandboxes.install_app(record.id),
        }
        try:
            steps[action]()
        except KeyError:
            message = "<p>Unknown action.</p>"
        except errors.ApiError as exc:
            message = f"<p>{html.escape(exc.message)}</p>"
    actions = {
        "unclaimed": _button("claim_new", "Claim into a new account")
        + _button("claim_existing", "Claim into my existing account"),
        "claimed": {
            "pending_onboarding": _button("submit_application", "Submit account application"),
            "pending_install": _button("install_app", "Install the app"),
        }.get(record.install_status or "", ""),
    }.get(record.status, "<p>Nothing left to do here.</p>")
    install = f", app {record.install_status}" if record.install_status else ""
    page = _PAGE.format(
        id=html.escape(record.id),
        email=html.escape(record.prefill["email"]),
        status=record.status,
        install=html.escape(install),
        actions=message + actions,
    )
    # the URL is the capability: keep it out of Referer headers, caches and other sites' frames
    return HTMLResponse(page, headers={
        "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
        "Content-Security-Policy": "frame-ancestors 'none'",
    })


async def get_requests(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    return state.faults.usage.report()


async def reset_requests(request: Request, state: EmulatorState, body: dict[str, Any]) -> Any:
    state.faults.usage.reset()
    return state.faults.usage.report()


def routes() -> list[Route]:
    prefix = "/_emulator"
    return [
        # liveness only (counts, no ids): container health checks call it without the token
        Route(f"{prefix}/healthz", control(healthz, public=True), methods=["GET"]),
        Route(f"{prefix}/sandboxes", control(list_sandboxes), methods=["GET"]),
        Route(f"{prefix}/sandboxes/{{id}}", control(get_sandbox), methods=["GET"]),
        Route(f"{prefix}/sandboxes/{{id}}/claim", control(claim), methods=["POST"]),
        Route(f"{prefix}/sandboxes/{{id}}/submit_application", control(submit_application), methods=["POST"]),
        Route(f"{prefix}/sandboxes/{{id}}/install_app", control(install_app), methods=["POST"]),
        Route(f"{prefix}/sandboxes/{{id}}/go_live", control(go_live), methods=["POST"]),
        Route(f"{prefix}/sandboxes/{{id}}/expire", control(expire), methods=["POST"]),
        Route(f"{prefix}/sandboxes/{{id}}/uninstall_app", control(uninstall_app), methods=["POST"]),
        # API requests per key (by a hash prefix), 429s of the rate limit, busiest second: what Stripe would bill
        Route(f"{prefix}/requests", control(get_requests), methods=["GET"]),
        Route(f"{prefix}/requests/reset", control(reset_requests), methods=["POST"]),
        Route(f"{prefix}/clock", control(get_clock), methods=["GET"]),
        Route(f"{prefix}/clock/advance", control(advance_clock), methods=["POST"]),
        Route(f"{prefix}/config", control(get_config), methods=["GET"]),
        Route(f"{prefix}/config", control(set_config), methods=["POST"]),
        Route(f"{prefix}/delivery", control(set_delivery), methods=["POST"]),
        Route(f"{prefix}/webhook_attempts", control(list_attempts), methods=["GET"]),
        Route(f"{prefix}/webhook_attempts/wait", control(wait_deliveries), methods=["POST"]),
        Route(f"{prefix}/webhook_endpoints", control(list_endpoints), methods=["GET"]),
        Route(f"{prefix}/webhook_endpoints", control(add_endpoint), methods=["POST"]),
        Route(f"{prefix}/webhook_endpoints/{{id}}", control(delete_endpoint), methods=["DELETE"]),
        Route(f"{prefix}/webhook_endpoints/{{id}}/roll_secret", control(roll_secret), methods=["POST"]),
        Route(f"{prefix}/onboard/{{token}}", onboarding_page, methods=["GET", "POST"]),
    ]
