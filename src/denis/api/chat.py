"""``POST /chat``: one turn over HTTP.

The API's hot path, kept lean on purpose (``benchmarks/bench_pipeline.py``, RESULTS.md
section 1):

- answered by ``denis.api.edge`` straight after the edge middlewares, outside FastAPI's own
  layers (about 40 µs of the event loop a turn, ``benchmarks/RESULTS.md`` section 1): the
  handler takes the ``Request`` and returns a ``Response``, and raises only ``DenisError``.
  It is also registered as a FastAPI path operation, never reached, so ``/chat`` is in the
  OpenAPI schema;
- the services come from ``app.state`` with ``get_services``, as the WebSocket route does;
- the reply is encoded once to the exact bytes ``JSONResponse`` would send, without
  ``dataclasses.asdict``, in a ``Response`` whose two headers are set directly
  (``_JsonReply``: Starlette's ``init_headers`` works them out for every reply).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from denis.api.body import encode_json, parse_chat_message, parse_json, read_body, reply_fields
from denis.api.deps import bearer_token, get_services
from denis.api.trace import current_trace_id
from denis.resilience import HOP_HEADER, Deadline, check_hops, parse_hop_header
from denis.sync_plane import TurnRequest

__all__ = ["post_chat", "router"]

router = APIRouter()


class _JsonReply(Response):
    """A 200 reply of JSON bytes with exactly the headers ``Response(body,
    media_type="application/json")`` gets (``test_api_pipeline`` compares them)."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:  # no super().__init__: the fields are set here
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


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
    return _JsonReply(encode_json(reply_fields(reply)))


# For the schema only: ``denis.api.edge`` answers every POST /chat before FastAPI's router.
router.add_api_route("/chat", post_chat, methods=["POST"], response_class=Response)
