"""``WS /chat``: authenticate with the first message, then one turn per ``chat`` message.

Tokens never travel in the URL. A turn's error is answered in-band (``{"type": "error"}``) and
the socket stays open; a failed handshake closes it with 1008 (policy). Frames are capped by the
server (``ws_max_frame_bytes``) and checked again here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import JsonValue

from denis.api.body import parse_chat_message, parse_json, reply_fields
from denis.api.deps import get_services
from denis.api.errors import close_code_for, error_body
from denis.api.services import Services
from denis.api.trace import current_trace_id
from denis.errors import DenisError, InvalidInputError, TooLargeError, UnauthorizedError
from denis.resilience import HOP_HEADER, Deadline, Signal, check_hops, parse_hop_header
from denis.sync_plane import Principal, TurnRequest

__all__ = ["router"]

router = APIRouter()
_log = structlog.get_logger("denis.api")
POLICY_VIOLATION = 1008
_MAX_ID_CHARS = 64


@router.websocket("/chat")
async def ws_chat(websocket: WebSocket) -> None:
    services = get_services(websocket)
    try:
        hops = check_hops(parse_hop_header(websocket.headers.get(HOP_HEADER)))
    except DenisError as exc:
        await websocket.close(code=close_code_for(exc) or POLICY_VIOLATION, reason=exc.code)
        return
    await websocket.accept()
    try:
        principal = await _authenticate(websocket, services)
        if principal is not None:
            await _converse(websocket, services, principal, hops)
    except WebSocketDisconnect:
        pass
    finally:
        services.signals.count(Signal.WS_DISCONNECT_RATE)


async def _authenticate(websocket: WebSocket, services: Services) -> Principal | None:
    try:
        async with asyncio.timeout(services.settings.ws_auth_timeout_s):
            raw = await _receive(websocket)
        data = _frame(raw, services)
        if not isinstance(data, dict) or data.get("type") != "auth":
            raise UnauthorizedError('the first message must be {"type": "auth", "token": "..."}')
        token = data.get("token")
        principal = services.tokens.authenticate(token if isinstance(token, str) else None)
    except (TimeoutError, DenisError) as exc:
        error = exc if isinstance(exc, DenisError) else UnauthorizedError("authenticate first")
        await websocket.send_json(
            {"type": "error", "id": None, **error_body(error.code, error.detail)}
        )
        await websocket.close(code=POLICY_VIOLATION, reason=error.code)
        return None
    await websocket.send_json({"type": "auth_ok", "user": principal.user})
    return principal


async def _converse(
    websocket: WebSocket, services: Services, principal: Principal, hops: int
) -> None:
    client_addr = websocket.client.host if websocket.client else "unknown"
    while True:
        message_id: JsonValue = None
        try:
            raw = await _receive(websocket)
            data = _frame(raw, services)
            if isinstance(data, dict):
                message_id = _message_id(data.get("id"))
            if isinstance(data, dict) and data.get("type") == "ping":
                await websocket.send_json({"type": "pong", "id": message_id})
                continue
            if not isinstance(data, dict) or data.get("type") != "chat":
                raise InvalidInputError('expected {"type": "chat", "id": ..., "text": "..."}')  # noqa: TRY301
            message = parse_chat_message(data, services.settings.max_text_chars)
            deadline = Deadline.start(services.clock, services.settings.chat_timeout_s)
            reply = await services.pipeline.run(
                TurnRequest(
                    text=message.text,
                    principal=principal,
                    client_addr=client_addr,
                    trace_id=current_trace_id(),
                    hops=hops,
                    session_id=message.session_id or "default",
                    lang=message.lang,
                ),
                deadline,
            )
            await websocket.send_json({"type": "reply", "id": message_id, **reply_fields(reply)})
        except DenisError as exc:
            body: dict[str, Any] = {
                "type": "error",
                "id": message_id,
                **error_body(exc.code, exc.detail),
            }
            if exc.retry_after_s is not None:
                body["retry_after_s"] = exc.retry_after_s
            await websocket.send_json(body)
        except (WebSocketDisconnect, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - the socket's outermost handler
            _log.error("api.unexpected_error", error=type(exc).__name__, where="ws_chat")
            await websocket.send_json(
                {"type": "error", "id": message_id, **error_body("unavailable", "please retry")}
            )


async def _receive(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    try:
        return bytes(message.get("bytes") or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("frames must be UTF-8 JSON text") from exc


def _frame(raw: str, services: Services) -> Any:
    if len(raw) > services.settings.max_body_bytes:
        raise TooLargeError(f"a message must be at most {services.settings.max_body_bytes} bytes")
    return parse_json(raw)


def _message_id(value: object) -> JsonValue:
    if isinstance(value, str) and len(value) <= _MAX_ID_CHARS:
        try:
            value.encode("utf-8")  # a lone surrogate could not be sent back
        except UnicodeEncodeError:
            return None
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
