"""Stripe-shaped API errors: `{"error": {"type", "code", "message"}}` with the HTTP status Stripe uses."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error the emulator answers with; `headers` carries e.g. `Stripe-Should-Retry`."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self, request_id: str) -> JSONResponse:
        body = {"error": {"type": self.type, "code": self.code, "message": self.message, **self.extra}}
        return JSONResponse(body, status_code=self.status, headers={"Request-Id": request_id, **self.headers})


def invalid(message: str, *, code: str = "parameter_invalid", param: str | None = None) -> ApiError:
    extra: dict[str, object] = {"param": param} if param else {}
    return ApiError(400, "invalid_request_error", code, message, extra=extra)


def missing(param: str) -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        "parameter_missing",
        f"Missing required param: {param}.",
        extra={"param": param},
    )


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, "invalid_request_error", "not_found", f"No such {kind}: '{object_id}'")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "invalid_request_error", "unauthorized", message)
