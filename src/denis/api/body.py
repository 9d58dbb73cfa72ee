"""Parsing a chat message, the same for HTTP bodies and WebSocket frames.

Hostile input is refused with its error code and nothing half-done: too many bytes → 413
``too_large`` (counted while streaming, so a huge body is never held in memory), not JSON,
invalid UTF-8, nested more than ``MAX_JSON_DEPTH`` levels (walked without recursion; the
parser's own ``RecursionError`` is the same 422), wrong types or empty text → 422
``invalid_input``, text over the limit → 413 ``too_large``.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.types import Receive

from denis.errors import DeadlineExceededError, InvalidInputError, TooLargeError
from denis.resilience import Deadline
from denis.sync_plane import TurnReply

__all__ = [
    "BODY_COMPLETE_EXTENSION",
    "ChatMessage",
    "encode_json",
    "parse_chat_message",
    "parse_json",
    "read_body",
    "reply_fields",
]

# Set in a request's scope by a server that has the whole body by the time the app runs
# (``denis.api.http_protocol``); ``read_body`` then arms no timer.
BODY_COMPLETE_EXTENSION = "denis.body_complete"
MAX_JSON_DEPTH = 32  # levels of arrays and objects; deeper is 422 invalid_input
_TOO_DEEP = f"the JSON nests more than {MAX_JSON_DEPTH} levels"

# The same bytes as Starlette's ``JSONResponse.render``; built once, where ``json.dumps`` with
# these options would build an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    text: str
    session_id: str | None = Field(default=None, max_length=128, pattern=r"^[\w.:-]+$")
    lang: Literal["en", "es"] | None = None


async def read_body(request: Request, max_bytes: int, deadline: Deadline) -> bytes:
    """The whole body, within the request's deadline (408 ``timeout`` if it takes longer).

    When the server says the body has arrived whole (``BODY_COMPLETE_EXTENSION`` in the scope:
    ``denis serve``'s protocol sets it once the request's last byte is parsed, before the app
    runs), reading it cannot wait, and it is read without arming a timer."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise InvalidInputError("Content-Length must be a number")
    if declared is not None and int(declared) > max_bytes:
        raise TooLargeError(f"the body must be at most {max_bytes} bytes")
    if BODY_COMPLETE_EXTENSION in request.scope.get("extensions", ()):
        return await _read_body(request.receive, max_bytes)
    try:
        async with asyncio.timeout(deadline.remaining_s()):
            return await _read_body(request.receive, max_bytes)
    except TimeoutError as exc:
        raise DeadlineExceededError(
            "the request body took too long to arrive", retry_after_s=1
        ) from exc


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    # ``request.stream()``'s loop, without its async generator (about 2 µs a request).
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInputError("the client went away before sending the whole body")
        if message["type"] != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise TooLargeError(f"the body must be at most {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _no_constant(_: str) -> Any:
    raise InvalidInputError("NaN and Infinity are not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999
        raise InvalidInputError("a number is too large")
    return value


# NaN and Infinity (also as 1e999) are refused: a browser's JSON.parse cannot take them back,
# and our own encoder (allow_nan=False) could not send them.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def parse_json(raw: bytes | str) -> Any:
    try:
        data = _DECODER.decode(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        raise InvalidInputError("the body is not valid UTF-8") from exc
    except RecursionError as exc:
        raise InvalidInputError(_TOO_DEEP) from exc
    except ValueError as exc:  # JSONDecodeError, and an integer over Python's 4300 digits
        raise InvalidInputError("the body is not valid JSON") from exc
    # Counting brackets runs in C; only a document with enough of them is walked.
    if isinstance(raw, bytes):
        brackets = raw.count(b"[") + raw.count(b"{")
    else:
        brackets = raw.count("[") + raw.count("{")
    if brackets > MAX_JSON_DEPTH and _too_deep(data):
        raise InvalidInputError(_TOO_DEEP)
    return data


def _too_deep(data: Any) -> bool:
    """Whether arrays and objects nest more than ``MAX_JSON_DEPTH`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def invalid_fields(exc: ValidationError) -> InvalidInputError:
    """A 422 naming the offending fields, never echoing their values."""
    fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
    return InvalidInputError(f"invalid field(s): {', '.join(fields)}")


def parse_chat_message(data: Any, max_text_chars: int) -> ChatMessage:
    if not isinstance(data, dict):
        raise InvalidInputError('expected a JSON object like {"text": "..."}')
    text = data.get("text")
    if isinstance(text, str) and len(text) > max_text_chars:
        raise TooLargeError(f"text must be at most {max_text_chars} characters")
    try:
        message = ChatMessage.model_validate(data)
    except ValidationError as exc:
        raise invalid_fields(exc) from exc
    if not message.text.strip():
        raise InvalidInputError("text must not be empty")
    return message


def reply_fields(reply: TurnReply) -> dict[str, Any]:
    """The reply as ``dataclasses.asdict`` gives it (same keys, same order), for a fraction of
    the cost: ``asdict`` deep-copies field by field."""
    return {
        "reply": reply.reply,
        "lang": reply.lang,
        "intent": reply.intent,
        "trace_id": reply.trace_id,
        "degraded": list(reply.degraded),
        "audio_url": reply.audio_url,
    }


def encode_json(content: Any) -> bytes:
    return _ENCODER.encode(content).encode("utf-8")
