"""One error type, one status mapping, one body shape for every service.

Body (contract): {"error": {"code": "...", "message": "...", "request_id": "..."}}.
Validation 422, payload too large 413, overload 429 (+ Retry-After), not ready or upstream
down 503, deadline 504. Anything unexpected is logged with its trace and answered 500 with
a generic message: a stack trace never reaches the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.request_id import get_request_id

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(..., description="machine-readable, e.g. invalid_input, overloaded")
    message: str = Field(..., description="what was wrong, for a person")
    request_id: str | None = Field(None, description="the X-Request-ID of the request")


class ErrorBody(BaseModel):
    error: ErrorDetail


_DESCRIPTIONS = {
    401: "missing or invalid API key",
    403: "admin endpoints disabled, or a wrong admin key",
    404: "no such route or item",
    409: "conflicts with the current state (another swap running, labels changed)",
    413: "request body too large",
    422: "invalid request",
    429: "overloaded or rate limited (see Retry-After)",
    503: "not ready, or an upstream is unavailable",
    504: "the deadline passed before an answer",
}


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses=` for a route: the error statuses it can answer, all with the one
    error body, so clients (and schemathesis) can rely on the schema for errors too."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status_code = 422
    code = "invalid_input"


class Overloaded(ServiceError):
    status_code = 429
    code = "overloaded"

    def __init__(self, message: str = "Model is overloaded, retry later", retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid API key"):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})


class NotReady(ServiceError):
    status_code = 503
    code = "not_ready"


class UpstreamUnavailable(ServiceError):
    status_code = 503
    code = "upstream_unavailable"


class DeadlineExceeded(ServiceError):
    status_code = 504
    code = "deadline_exceeded"


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "request_id": get_request_id()}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _format_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            where = err.get("loc", ("body", "?"))[-1]
            parts.append(
                f"body is not valid JSON ({err.get('ctx', {}).get('error', 'syntax')}"
                f" at character {where})"
            )
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "overloaded",
    503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError):
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        return error_response(422, "invalid_input", _format_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI's answer to a body it cannot decode (e.g. bytes that are not UTF-8):
            # an invalid request body, so 422 like every other invalid body.
            return error_response(422, "invalid_input", "body is not valid UTF-8 JSON")
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        logger.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal server error")
