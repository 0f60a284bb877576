"""Every error a client can see, and the one JSON shape they share: {"error": {code, message}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.request_context import current_request_id

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"
    model_fault = False
    """The serving version failed the request (its session raised, or it missed the server's
    deadline): what a rollback rule counts. Input errors, refusals, a client's own short deadline
    and the server's own bugs are never the version's fault."""

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class BadRequest(ServiceError):
    status_code, code = 400, "bad_request"


class ModelNotFound(ServiceError):
    status_code, code = 404, "model_not_found"


class VersionNotFound(ServiceError):
    status_code, code = 404, "version_not_found"


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code, code = 415, "unsupported_media_type"


class InvalidImage(ServiceError):
    """The bytes claim to be an image but cannot be decoded (corrupt, truncated, unknown format)."""

    status_code, code = 415, "invalid_image"


class InvalidParameter(ServiceError):
    status_code, code = 422, "invalid_parameter"


class Overloaded(ServiceError):
    status_code, code = 503, "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    status_code, code = 503, "not_ready"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class InferenceFailed(ServiceError):
    status_code, code, model_fault = 503, "inference_failed", True


class ClientClosedRequest(ServiceError):
    """The client went away before its request was read (nginx's 499); nobody sees the answer."""

    status_code, code = 499, "client_closed_request"


class RequestTimeout(ServiceError):
    """The request's body did not arrive by its deadline; the connection is closed after the
    answer."""

    status_code, code = 408, "request_timeout"


class DeadlineExceeded(ServiceError):
    status_code, code, model_fault = 504, "deadline_exceeded", True


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error shape, with the request's id to quote when there is one."""
    error = {"code": code, "message": message}
    request_id = current_request_id()
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the JSON error shape; nothing leaks a stack trace or a path."""

    async def service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status_code, headers=exc.headers
        )

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse(
            error_body("invalid_parameter", "; ".join(parts) or "invalid request"), status_code=422
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
