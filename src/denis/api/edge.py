"""The ASGI entry point: Denis's two edge middlewares, then ``POST /chat`` answered at once and
every other request handed to FastAPI.

``DenisApi`` is the FastAPI application (routes, lifespan, ``state``, OpenAPI schema, error
handlers all as FastAPI has them) with one thing changed: what runs when the server calls it.
Each request goes through ``TraceMiddleware`` (trace id, security headers, the one catch-all)
and ``SecurityMiddleware`` (CORS, WebSocket origin, declared body size), exactly as when they
were FastAPI middleware; then ``POST /chat``, the hot path, is answered by
``denis.api.chat.post_chat`` directly, its ``DenisError`` mapped by ``error_response`` (the
handler FastAPI would have called), and everything else (WebSocket ``/chat``, ``/status``,
static files, the lifespan) goes to ``FastAPI.__call__``.

Why not a FastAPI route: the framework's own layers around a route (``FastAPI.__call__``,
Starlette's ``ServerErrorMiddleware``, FastAPI's exception, body-limit and telemetry
middlewares, ``AsyncExitStackMiddleware``, the router and its route matching) cost the event
loop more per request than a whole turn's gates (``benchmarks/RESULTS.md`` section 1, fifth
round: a bare FastAPI route takes about 100 µs of CPU a request, the same reply from a bare
ASGI app under uvicorn 36). A turn on ``POST /chat`` needs none of them: its handler reads the
body itself and raises only ``DenisError``, and an unexpected error is ``TraceMiddleware``'s
503 as before.

Inside FastAPI, an unexpected error in another route reaches Starlette's
``ServerErrorMiddleware`` before ``TraceMiddleware``; ``denis.api.errors`` gives it the same
503 body ``TraceMiddleware`` sends, so no route answers a 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from denis.api.chat import post_chat
from denis.api.errors import error_response
from denis.api.security import SecurityMiddleware
from denis.api.trace import TraceMiddleware
from denis.errors import DenisError

__all__ = ["DenisApi"]


class _ChatFirst:
    """``POST /chat`` answered here; anything else passed on to FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/chat" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = await post_chat(Request(scope, receive))
        except DenisError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


class DenisApi(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._edge: ASGIApp = TraceMiddleware(SecurityMiddleware(_ChatFirst(super().__call__)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # what FastAPI sets; the middlewares and handlers read ``state``
        await self._edge(scope, receive, send)
