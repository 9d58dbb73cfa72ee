"""The HTTP/WebSocket edge: the only package that imports FastAPI, Starlette or uvicorn.

Owns: routes (``/chat``, ``WS /chat``, ``/status``, ``/metrics``, ``/healthz``, ``/readyz``,
``/``), request parsing and limits, bearer auth at the edge, and the one mapping from
``DenisError`` to HTTP statuses and WebSocket close codes (``errors.py``).
Depends on: the zones' public interfaces, handed over in ``Services`` by ``denis.app``.
Degrades: never answers a stack trace; an unexpected error is one log line and a 503 body.
Emits: ``ws.disconnect_rate``.
"""

from denis.api.factory import build_api
from denis.api.server import serve
from denis.api.services import Services

__all__ = ["Services", "build_api", "serve"]
