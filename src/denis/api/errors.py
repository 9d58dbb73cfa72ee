"""The one place that maps errors to HTTP statuses and WebSocket close codes.

A status is found by walking ``type(exc).__mro__`` (as Starlette does), so a new subclass gets
its parent's status until it is given its own. Every body is
``{"error": {"code": ..., "detail": ...}}``, with ``Retry-After`` where the error has one.
"""

from __future__ import annotations

import math

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from denis import errors as e

__all__ = ["close_code_for", "error_body", "error_response", "install_error_handlers", "status_for"]

_log = structlog.get_logger("denis.api")

STATUS: dict[type[e.DenisError], int] = {
    e.DenisError: 503,
    e.DependencyError: 503,
    e.RejectedError: 400,
    e.UnauthorizedError: 401,
    e.ForbiddenError: 403,
    e.GateClosedError: 403,
    e.RateLimitedError: 429,
    e.HopLimitError: 508,
    e.DeadlineExceededError: 408,
    e.InvalidInputError: 422,
    e.TooLargeError: 413,
    e.NotFoundError: 404,
}

# Errors that end a WebSocket; the others are answered in-band and the socket stays open.
CLOSE_CODE: dict[type[e.DenisError], int] = {
    e.UnauthorizedError: 1008,
    e.HopLimitError: 1008,
    e.DependencyError: 1013,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 401: "unauthorized"}


def status_for(exc: e.DenisError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 503


def close_code_for(exc: e.DenisError) -> int | None:
    for cls in type(exc).__mro__:
        if cls in CLOSE_CODE:
            return CLOSE_CODE[cls]
    return None


def error_body(code: str, detail: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "detail": detail}}


def error_response(exc: e.DenisError) -> JSONResponse:
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if isinstance(exc, e.UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc.code, exc.detail), status_for(exc), headers=headers)


def unexpected_response() -> JSONResponse:
    return JSONResponse(
        error_body("unavailable", "Denis hit an unexpected problem answering this; please retry."),
        503,
        headers={"Retry-After": "1"},
    )


async def _denis_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.DenisError)  # noqa: S101 - registered for DenisError only
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    return JSONResponse(error_body("invalid_input", "the request is not valid"), 422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = _HTTP_CODES.get(
        exc.status_code, "invalid_input" if exc.status_code < 500 else "unavailable"
    )
    status = exc.status_code if exc.status_code < 500 else 503
    return JSONResponse(error_body(code, str(exc.detail)), status, headers=exc.headers)


async def _unexpected_error(_: Request, __: Exception) -> JSONResponse:
    """Starlette's ``ServerErrorMiddleware`` answers with this instead of a 500, then re-raises
    the error to ``TraceMiddleware``, which logs it (``denis.api.edge``)."""
    return unexpected_response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(e.DenisError, _denis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
