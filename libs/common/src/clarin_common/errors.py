"""The error model of API.md: one JSON shape for every error."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class AppError(Exception):
    status_code = 400
    code = "bad_request"
    message = "Bad request"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    message = "Authentication required"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    message = "Email or password is wrong"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    message = "You are not allowed to do this"


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "Not found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    message = "Conflict"


class DeviceNotConnected(Conflict):
    code = "device_not_connected"
    message = "The device is not connected"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "Upload too large"


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_error"
    message = "Validation failed"

    @classmethod
    def field(cls, loc: list[str | int], msg: str, type_: str = "value_error") -> ValidationFailed:
        return cls(details=[{"loc": loc, "msg": msg, "type": type_}])


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "A dependency is unavailable; nothing was changed"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, details), status_code=status_code, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", "Validation failed", _clean_errors(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    return error_response(exc.status_code, code, message, None, getattr(exc, "headers", None))


async def _text_not_storable(_: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL text cannot hold NUL (\u0000); the statement failed and changed nothing
    return error_response(
        422,
        "validation_error",
        "Text may not contain NUL characters",
        [{"loc": ["body"], "msg": "Text may not contain NUL characters", "type": "string_nul"}],
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL refused a connection (out of connections, starting or shutting
    # down): nothing was changed and a retry may pass, which is what 503 says
    log.warning("database_unavailable", path=request.url.path, error=str(exc)[:300])
    return error_response(503, ServiceUnavailable.code, ServiceUnavailable.message)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(asyncpg.exceptions.CharacterNotInRepertoireError, _text_not_storable)
    app.add_exception_handler(asyncpg.exceptions.UntranslatableCharacterError, _text_not_storable)
    for refused in (
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.ConnectionFailureError,
    ):
        app.add_exception_handler(refused, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled)
