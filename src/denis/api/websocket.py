"""``WS /chat``: authenticate with the first message, then turns, pings and live status.

The protocol (the web app in ``denis/web`` speaks it):

- first frame ``{"type": "auth", "token": ...}`` → ``{"type": "auth_ok", "user"}`` and then
  ``{"type": "ready", "user", "status": <GET /status>}``; anything else, or nothing within
  ``ws_auth_timeout_s``, gets an in-band error and a close with 1008 (policy). Tokens never
  travel in the URL.
- ``{"type": "chat", "id", "text", "session_id"?, "lang"?}`` → ``{"type": "reply", "id", <the
  HTTP reply's fields>}`` or ``{"type": "error", "id", "error": {code, detail},
  "retry_after_s"?}``; the socket stays open. Turns run one at a time in arrival order on a task
  of their own, so the socket keeps reading (and answering pings) while one runs; at most
  ``_MAX_WAITING_TURNS`` wait behind it, more are refused in-band (``rate_limited``).
- ``{"type": "ping", "id", "t"?}`` → ``{"type": "pong", "id", "t"?}`` at once (``t``, the
  client's clock, echoed if it is a number).
- the server pushes ``{"type": "status", "status": <GET /status>}`` every ``ws_status_s``, and
  within ``_CHANGE_POLL_S`` of a zone's mode or a breaker's state changing.

Containment: a client address opening more than ``ws_reconnect_limit`` sockets per
``ws_reconnect_window_s`` is accepted and closed at once with 1013 (try again later) and the
reason ``{"retry_after_s": N}`` (JSON); ``ws.reconnect_storm`` is emitted once per storm and
counted per refusal (``ws_guard``). A client address with ``ws_max_connections_per_client``
sockets open gets the next one closed with 1013 and ``{"retry_after_s": 5}`` too (counted as
``ws.server_disconnect``). A connection sending more than ``ws_max_frames_per_s``
frames (bursts of twice that) gets an in-band ``rate_limited`` error per extra frame. Frames are
capped by the server (``ws_max_frame_bytes``) and checked again here. Each close the server
makes itself (1008, 1013, and 1012 when it shuts down) counts ``ws.server_disconnect``;
each socket that ends counts ``ws.disconnect_rate``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import JsonValue
from starlette.datastructures import State

from denis.api.body import ChatMessage, parse_chat_message, parse_json, reply_fields
from denis.api.deps import get_services
from denis.api.errors import close_code_for, error_body
from denis.api.services import Services
from denis.api.trace import current_trace_id
from denis.api.ws_guard import ConnectionCap, FrameBucket, ReconnectGuard
from denis.errors import (
    DenisError,
    InvalidInputError,
    RateLimitedError,
    TooLargeError,
    UnauthorizedError,
)
from denis.resilience import HOP_HEADER, Deadline, Signal, check_hops, parse_hop_header
from denis.sync_plane import Principal, TurnReply, TurnRequest

__all__ = ["router"]

router = APIRouter()
_log = structlog.get_logger("denis.api")
POLICY_VIOLATION = 1008
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
_MAX_ID_CHARS = 64
_MAX_WAITING_TURNS = 8
_CHANGE_POLL_S = 0.25
_CONNECTION_CAP_RETRY_S = 5

_Turn = tuple[JsonValue, ChatMessage] | None  # None: the reader is done, stop


@router.websocket("/chat")
async def ws_chat(websocket: WebSocket) -> None:
    services = get_services(websocket)
    try:
        hops = check_hops(parse_hop_header(websocket.headers.get(HOP_HEADER)))
    except DenisError as exc:
        await websocket.close(code=close_code_for(exc) or POLICY_VIOLATION, reason=exc.code)
        services.signals.count(Signal.WS_SERVER_DISCONNECT)
        return
    client_addr = websocket.client.host if websocket.client else "unknown"
    await websocket.accept()
    cap = _connection_cap(websocket.app.state, services)
    counted = False
    try:
        if await _refuse_a_storm(websocket, services, client_addr):
            return
        counted = cap.acquire(client_addr)
        if not counted:
            await _try_again_later(websocket, services, _CONNECTION_CAP_RETRY_S)
            return
        principal = await _authenticate(websocket, services)
        if principal is not None:
            await _converse(websocket, services, principal, hops, client_addr)
    except WebSocketDisconnect as exc:
        if exc.code == SERVICE_RESTART:  # uvicorn closed it: the server is shutting down
            services.signals.count(Signal.WS_SERVER_DISCONNECT)
    finally:
        if counted:
            cap.release(client_addr)
        services.signals.count(Signal.WS_DISCONNECT_RATE)


def _connection_cap(state: State, services: Services) -> ConnectionCap:
    cap: ConnectionCap | None = getattr(state, "ws_connection_cap", None)
    if cap is None:
        cap = ConnectionCap(limit=services.settings.ws_max_connections_per_client)
        state.ws_connection_cap = cap
    return cap


async def _try_again_later(websocket: WebSocket, services: Services, retry_after_s: int) -> None:
    """Close with 1013 and the JSON reason ``{"retry_after_s": N}``."""
    reason = json.dumps({"retry_after_s": retry_after_s}, separators=(",", ":"))
    await websocket.close(code=TRY_AGAIN_LATER, reason=reason)
    services.signals.count(Signal.WS_SERVER_DISCONNECT)


def _reconnect_guard(state: State, services: Services) -> ReconnectGuard:
    guard: ReconnectGuard | None = getattr(state, "ws_reconnect_guard", None)
    if guard is None:
        settings = services.settings
        guard = ReconnectGuard(
            limit=settings.ws_reconnect_limit,
            window_s=settings.ws_reconnect_window_s,
            clock=services.clock,
        )
        state.ws_reconnect_guard = guard
    return guard


async def _refuse_a_storm(websocket: WebSocket, services: Services, client_addr: str) -> bool:
    refusal = _reconnect_guard(websocket.app.state, services).admit(client_addr)
    if refusal is None:
        return False
    if refusal.first:
        services.signals.emit(
            Signal.WS_RECONNECT_STORM,
            client=client_addr,
            limit=services.settings.ws_reconnect_limit,
            window_s=services.settings.ws_reconnect_window_s,
        )
    else:
        services.signals.count(Signal.WS_RECONNECT_STORM)
    await _try_again_later(websocket, services, refusal.retry_after_s)
    return True


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
        services.signals.count(Signal.WS_SERVER_DISCONNECT)
        return None
    await websocket.send_json({"type": "auth_ok", "user": principal.user})
    await websocket.send_json(
        {"type": "ready", "user": principal.user, "status": services.health.snapshot()}
    )
    return principal


class _Sender:
    """One writer at a time (the reader, the turn task and the status push share the socket);
    after the socket is gone, sends are dropped instead of raising."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if self.closed:
                return
            try:
                await self._websocket.send_json(message)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True


async def _converse(
    websocket: WebSocket, services: Services, principal: Principal, hops: int, client_addr: str
) -> None:
    session = _Session(websocket, services, principal, hops, client_addr)
    pusher = asyncio.create_task(_push_status(session.sender, services))
    answerer = asyncio.create_task(session.answer_turns())
    try:
        await session.read_frames()
    except asyncio.CancelledError:  # the server is going: do not wait for the running turn
        answerer.cancel()
        raise
    finally:
        session.sender.closed = True
        pusher.cancel()
        session.stop_turns()
        try:
            await answerer  # bounded by the running turn's deadline
        finally:
            await asyncio.gather(pusher, answerer, return_exceptions=True)


class _Session:
    """One authenticated socket: the reader answers pings and queues turns, one task answers
    the turns in order."""

    def __init__(
        self,
        websocket: WebSocket,
        services: Services,
        principal: Principal,
        hops: int,
        client_addr: str,
    ) -> None:
        self.sender = _Sender(websocket)
        self._websocket = websocket
        self._services = services
        self._principal = principal
        self._hops = hops
        self._client_addr = client_addr
        self._turns: asyncio.Queue[_Turn] = asyncio.Queue(maxsize=_MAX_WAITING_TURNS)
        self._bucket = FrameBucket(
            per_s=services.settings.ws_max_frames_per_s, clock=services.clock
        )

    def stop_turns(self) -> None:
        """Drop the turns not started; the one running finishes, then the task ends."""
        while not self._turns.empty():
            self._turns.get_nowait()
        self._turns.put_nowait(None)

    async def read_frames(self) -> None:
        while True:
            message_id: JsonValue = None
            try:
                data = _frame(await _receive(self._websocket), self._services)
                if isinstance(data, dict):
                    message_id = _message_id(data.get("id"))
                await self._handle(data, message_id)
            except DenisError as exc:
                await self.sender.send(_error(message_id, exc))
            except (WebSocketDisconnect, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - the reader's outermost handler
                await self.sender.send(_unexpected(message_id, exc, where="ws_read"))

    async def _handle(self, data: Any, message_id: JsonValue) -> None:
        wait_s = self._bucket.take()
        if wait_s is not None:
            raise RateLimitedError(
                "too many messages on this connection; slow down", retry_after_s=wait_s
            )
        if isinstance(data, dict) and data.get("type") == "ping":
            pong: dict[str, Any] = {"type": "pong", "id": message_id}
            t = data.get("t")
            if isinstance(t, int | float) and not isinstance(t, bool):
                pong["t"] = t
            await self.sender.send(pong)
            return
        if not isinstance(data, dict) or data.get("type") != "chat":
            raise InvalidInputError('expected {"type": "chat", "id": ..., "text": "..."}')
        message = parse_chat_message(data, self._services.settings.max_text_chars)
        try:
            self._turns.put_nowait((message_id, message))
        except asyncio.QueueFull:
            raise RateLimitedError(
                "too many messages waiting for a reply; wait for one", retry_after_s=1
            ) from None

    async def answer_turns(self) -> None:
        while (turn := await self._turns.get()) is not None:
            message_id, message = turn
            try:
                reply = await self._run(message)
                await self.sender.send({"type": "reply", "id": message_id, **reply_fields(reply)})
            except DenisError as exc:
                await self.sender.send(_error(message_id, exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the turn task's outermost handler
                await self.sender.send(_unexpected(message_id, exc, where="ws_chat"))

    async def _run(self, message: ChatMessage) -> TurnReply:
        services = self._services
        deadline = Deadline.start(services.clock, services.settings.chat_timeout_s)
        return await services.pipeline.run(
            TurnRequest(
                text=message.text,
                principal=self._principal,
                client_addr=self._client_addr,
                trace_id=current_trace_id(),
                hops=self._hops,
                session_id=message.session_id or "default",
                lang=message.lang,
            ),
            deadline,
        )


async def _push_status(sender: _Sender, services: Services) -> None:
    loop = asyncio.get_running_loop()
    every_s = services.settings.ws_status_s
    modes = services.health.modes()
    pushed_s = loop.time()
    while not sender.closed:
        await asyncio.sleep(min(every_s, _CHANGE_POLL_S))
        try:
            now_modes = services.health.modes()
            if now_modes == modes and loop.time() - pushed_s < every_s:
                continue
            modes, pushed_s = now_modes, loop.time()
            await sender.send({"type": "status", "status": services.health.snapshot()})
        except Exception as exc:  # noqa: BLE001 - a status function failed; try next time
            _log.error("api.unexpected_error", error=type(exc).__name__, where="ws_status")
            pushed_s = loop.time()


def _error(message_id: JsonValue, exc: DenisError) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "id": message_id, **error_body(exc.code, exc.detail)}
    if exc.retry_after_s is not None:
        body["retry_after_s"] = exc.retry_after_s
    return body


def _unexpected(message_id: JsonValue, exc: Exception, *, where: str) -> dict[str, Any]:
    """Log an error no handler expected (its type only) and answer it in-band, generically."""
    _log.error("api.unexpected_error", error=type(exc).__name__, where=where)
    return {"type": "error", "id": message_id, **error_body("unavailable", "please retry")}


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
