"""Browser-facing security at the edge: CSP and friends, CORS, the WebSocket's Origin, and a
declared body size over the limit refused before any route runs.

Pure ASGI and cheap: the header values are built once, each request's headers are walked once,
and a request from no other origin (the web app itself, CLI clients) passes straight through.
``SECURITY_HEADERS``, which ``TraceMiddleware`` (``denis.api.trace``, the outermost layer)
appends to every HTTP response, its own 503 and this middleware's refusals included (under
``denis serve`` the HTTP protocol writes them, pre-encoded, into each response head instead):

- ``Content-Security-Policy``: scripts, styles, fetches and media from this origin only (images
  may be ``data:``, recorded audio ``blob:``), the WebSocket on ``ws:``/``wss:``, no framing, no
  ``<base>``, forms only to this origin. The web app (``denis/web``) has no inline script or
  style, so nothing needs ``'unsafe-inline'``.
- ``Permissions-Policy: microphone=(self)`` (voice input, this origin only);
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``.

CORS: no cross-origin access unless ``DENIS_CORS_ORIGINS`` lists the origin. A listed origin
gets ``Access-Control-Allow-Origin: <origin>`` (never ``*``, never credentials: the token is a
header the page sets) and its preflights are answered 204; any other origin's preflight is 403
``forbidden`` with no CORS header, so the browser blocks the call.

WebSocket: a handshake whose ``Origin`` is present and neither this server's own (the ``Host``
header) nor listed is accepted and closed at once with 1008 and the reason
``origin_not_allowed`` (counted as ``ws.server_disconnect``), so a page on another site cannot
ride a user's network position to the socket. A missing ``Origin`` is allowed: browsers always
send one, CLI clients often do not, and they still need a token.

Body size: a ``Content-Length`` over ``max_body_bytes`` is 413 ``too_large`` on every route,
including those that read no body; bodies without a length are counted by ``read_body`` while
they stream. Header sizes: a request line and headers over 64 KiB are 431 ``too_large``, from
``denis.api.http_limits`` before any ASGI code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from denis.api.errors import error_response
from denis.errors import ForbiddenError, TooLargeError
from denis.resilience import Signal

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEAD",
    "SECURITY_HEADERS",
    "SECURITY_HEADERS_EXTENSION",
    "SecurityMiddleware",
    "same_origin",
]

_log = structlog.get_logger("denis.api")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"permissions-policy", b"microphone=(self)"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)
# Set in a request's scope by a server that writes ``SECURITY_HEAD`` into every response head
# itself (``denis.api.http_protocol``, under ``denis serve``); ``TraceMiddleware`` then adds none.
SECURITY_HEADERS_EXTENSION = "denis.security_headers"
SECURITY_HEAD = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)
_ALLOWED_METHODS = b"GET, POST, DELETE"
_ALLOWED_HEADERS = b"authorization, content-type, x-denis-hop"
_PREFLIGHT_MAX_AGE = b"600"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_DEFAULT_MAX_BODY_BYTES = 64 * 1024  # before the services are open
POLICY_VIOLATION = 1008


@dataclass(frozen=True, slots=True)
class _Limits:
    cors_origins: frozenset[str]
    max_body_bytes: int


@dataclass(slots=True)
class _Seen:
    """The request headers this middleware reads, found in one walk."""

    origin: str | None = None
    host: str | None = None
    length: int | None = None
    preflight: bool = False

    @classmethod
    def of(cls, scope: Scope) -> _Seen:
        seen = cls()
        for name, value in scope["headers"]:
            if name == b"origin":
                seen.origin = value.decode("latin-1")
            elif name == b"host":
                seen.host = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                seen.length = int(value)
            elif name == b"access-control-request-method":
                seen.preflight = True
        return seen


def _netloc(scheme: str, host: str) -> str:
    """``host[:port]`` lower-cased, the scheme's default port dropped."""
    host = host.lower()
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and "]" not in port and int(port) == _DEFAULT_PORTS.get(scheme):
        return name
    return host


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (an ``Origin`` header) names the server reached through ``host``."""
    if not host:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _netloc(parts.scheme, parts.netloc) == _netloc(parts.scheme, host)


class SecurityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limits: _Limits | None = None

    def _current_limits(self, scope: Scope) -> _Limits:
        if self._limits is not None:
            return self._limits
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        if services is None:  # starting: no CORS, the default size limit
            return _Limits(frozenset(), _DEFAULT_MAX_BODY_BYTES)
        settings = services.settings
        self._limits = _Limits(frozenset(settings.cors_origins), settings.max_body_bytes)
        return self._limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        seen = _Seen.of(scope)
        limits = self._current_limits(scope)
        if kind == "websocket":
            origin = seen.origin
            if origin is None or origin in limits.cors_origins or same_origin(origin, seen.host):
                await self.app(scope, receive, send)
            else:
                await self._refuse_socket(scope, receive, send)
            return
        allowed = seen.origin is not None and seen.origin in limits.cors_origins
        if seen.preflight and seen.origin is not None and scope["method"] == "OPTIONS":
            await self._preflight(scope, receive, send, seen.origin if allowed else None)
            return
        if seen.length is not None and seen.length > limits.max_body_bytes:
            detail = f"the body must be at most {limits.max_body_bytes} bytes"
            response = error_response(TooLargeError(detail))
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        if not allowed or seen.origin is None:
            await self.app(scope, receive, send)
            return
        cors = (
            (b"access-control-allow-origin", seen.origin.encode("latin-1")),
            (b"vary", b"Origin"),
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: str | None
    ) -> None:
        if origin is None:
            refusal = ForbiddenError("cross-origin requests are not allowed")
            await error_response(refusal)(scope, receive, send)
            return
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", _ALLOWED_METHODS),
            (b"access-control-allow-headers", _ALLOWED_HEADERS),
            (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse_socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send(
            {"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "origin_not_allowed"}
        )
        services = getattr(scope["app"].state, "services", None)
        if services is not None:
            services.signals.count(Signal.WS_SERVER_DISCONNECT)
