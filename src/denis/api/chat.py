"""``POST /chat``: one turn over HTTP.

The API's hot path, kept lean on purpose (``benchmarks/bench_pipeline.py``, RESULTS.md
section 1):

- served by a plain Starlette route: the handler takes the ``Request`` and returns a
  ``Response``, so FastAPI's per-request machinery (dependency solving, endpoint wrapping,
  about 30 µs a turn, ``benchmarks/RESULTS.md``) does no work for it. The same handler is
  also registered as a FastAPI path operation after it, never reached (the Starlette route
  matches ``POST /chat`` first), so ``/chat`` stays in the OpenAPI schema, unchanged. Errors
  go through the app's handlers either way;
- the services come from ``app.state`` with ``get_services``, as the WebSocket route does;
- the reply is encoded once to the exact bytes ``JSONResponse`` would send, without
  ``dataclasses.asdict``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from denis.api.body import encode_json, parse_chat_message, parse_json, read_body, reply_fields
from denis.api.deps import bearer_token, get_services
from denis.api.trace import current_trace_id
from denis.resilience import HOP_HEADER, Deadline, check_hops, parse_hop_header
from denis.sync_plane import TurnRequest

__all__ = ["router"]

router = APIRouter()


async def post_chat(request: Request) -> Response:
    services = get_services(request)
    hops = check_hops(parse_hop_header(request.headers.get(HOP_HEADER)))
    deadline = Deadline.start(services.clock, services.settings.chat_timeout_s)
    principal = services.tokens.authenticate(bearer_token(request))
    raw = await read_body(request, services.settings.max_body_bytes, deadline)
    message = parse_chat_message(parse_json(raw), services.settings.max_text_chars)
    reply = await services.pipeline.run(
        TurnRequest(
            text=message.text,
            principal=principal,
            client_addr=request.client.host if request.client else "unknown",
            trace_id=current_trace_id(),
            hops=hops,
            session_id=message.session_id or "default",
            lang=message.lang,
        ),
        deadline,
    )
    return Response(encode_json(reply_fields(reply)), media_type="application/json")


router.add_route("/chat", post_chat, methods=["POST"])  # serves every POST /chat
router.add_api_route("/chat", post_chat, methods=["POST"], response_class=Response)  # the schema
