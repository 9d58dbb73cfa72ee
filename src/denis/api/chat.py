"""``POST /chat``: one turn over HTTP."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from denis.api.body import parse_chat_message, parse_json, read_body
from denis.api.deps import ServicesDep, bearer_token
from denis.api.trace import current_trace_id
from denis.resilience import HOP_HEADER, Deadline, check_hops, parse_hop_header
from denis.sync_plane import TurnRequest

__all__ = ["router"]

router = APIRouter()


@router.post("/chat")
async def post_chat(request: Request, services: ServicesDep) -> JSONResponse:
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
    return JSONResponse(dataclasses.asdict(reply))
