"""The outermost middleware: a trace id per request, the security headers
(``denis.api.security.SECURITY_HEADERS``) on every response, and containment. Under
``denis serve`` the HTTP protocol writes the security headers into every response head itself
and says so in the scope (``SECURITY_HEADERS_EXTENSION``); they are then not added here.

Pure ASGI (not ``BaseHTTPMiddleware``) so it also wraps WebSockets and streams nothing twice.
It is the only place that catches a bare ``Exception``: the error becomes one log line (type
and where, no traceback) and a 503 ``unavailable`` body if nothing was sent yet. Starlette's
own 500 handler would log a traceback per request and re-raise.
"""

from __future__ import annotations

import traceback

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from denis.api.errors import unexpected_response
from denis.api.security import SECURITY_HEADERS, SECURITY_HEADERS_EXTENSION
from denis.resilience.logs import bind_trace_id, bound_trace_id, new_trace_id, unbind_trace_id

__all__ = ["TraceMiddleware", "current_trace_id"]

_log = structlog.get_logger("denis.api")


def current_trace_id() -> str:
    return bound_trace_id() or new_trace_id()


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        trace_id = new_trace_id()
        token = bind_trace_id(trace_id)
        started = False
        # Unless the server writes them itself (``denis.api.http_protocol``)
        security = (
            () if SECURITY_HEADERS_EXTENSION in scope.get("extensions", ()) else SECURITY_HEADERS
        )

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-trace-id", trace_id.encode()),
                    *security,
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - the one outermost catch-all
            _log.error("api.unexpected_error", error=type(exc).__name__, where=_where(exc))
            if scope["type"] == "http" and not started:
                await unexpected_response()(scope, receive, send_with_headers)
        finally:
            unbind_trace_id(token)
