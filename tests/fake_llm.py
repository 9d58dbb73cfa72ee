"""A small OpenAI-compatible chat server for the tests, steerable while it runs.

It speaks the real wire format of ``POST /v1/chat/completions`` (the request's ``model``,
``messages``, ``max_tokens``; an answer with ``choices[0].message.content`` and ``usage``), on
its own loopback port, in threads of this process. Set ``mode`` at any time:

- ``normal``: answers ``reply`` (or, when that is None, echoes the last user message);
- ``slow``: the same after ``delay_s``;
- ``failing``: HTTP 500;
- ``hung``: accepts the request and never answers (until the server stops);
- ``malformed``: HTTP 200 with a body that is not JSON.

Every request it got is kept in ``requests`` (path, headers, JSON body) to assert on.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["normal", "slow", "failing", "hung", "malformed"]


@dataclass(frozen=True)
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: Any


class FakeLlm:
    def __init__(self) -> None:
        self.mode: Mode = "normal"
        self.delay_s = 5.0
        self.reply: str | None = None
        self.usage = True
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, as ``DENIS_LLM_URL`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLlm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hung and slow handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def seen(self) -> list[SeenRequest]:
        with self._lock:
            return list(self.requests)

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _answer(self, body: Any) -> dict[str, Any]:
        messages = body.get("messages", []) if isinstance(body, dict) else []
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text = self.reply if self.reply is not None else f"echo: {last_user}"
        answer: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model") if isinstance(body, dict) else None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if self.usage:
            answer["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeLlm) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        fake._record(SeenRequest(self.path, dict(self.headers.items()), body))
        mode = fake.mode
        if self.path != "/v1/chat/completions":
            self._send(404, b'{"error": {"message": "not found"}}')
        elif mode == "hung":
            fake._stopping.wait()
        elif mode == "failing":
            self._send(500, b'{"error": {"message": "internal error"}}')
        elif mode == "malformed":
            self._send(200, b'{"choices": [ this is not json')
        elif mode == "slow" and fake._stopping.wait(fake.delay_s):
            return  # the server is stopping
        else:
            self._send(200, json.dumps(fake._answer(body)).encode())

    def _send(self, status: int, payload: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up first (its timeout): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
