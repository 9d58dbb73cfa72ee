"""``WS /chat`` fuzzed with malformed frames (hypothesis) against a real ``denis serve``.

Frames: arbitrary text and bytes (binary frames), JSON of every shape, messages with the right
keys and wrong types (auth with a token that is a number, a list, ``null``, huge), chat before
auth, deeply nested JSON, frames over the server's size limit, and numbers JSON cannot carry.

Properties: every frame gets an answer or a close within ``NO_HANG_S``; before auth anything
but a valid auth is an in-band error and a close with 1008 (or 1009 for an oversized frame);
after auth every frame gets exactly its answer (``error``, ``pong`` or ``reply``; ``status``
pushes may come in between) and the socket stays usable, or an oversized frame closes it with
1009; every answer is strict JSON (no ``NaN``) and has no Python traceback; the server's log has
no traceback and no ``api.unexpected_error``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from probes import log_problems, log_size
from servers import DenisProcess, create_token

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]

EXAMPLES = 150
# The same cases every run (a failure is reproducible), and no time or health limits: each
# example is a real round trip to a real server.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
NO_HANG_S = 10.0  # generous: proves "did not hang"
FRAME_LIMIT = 16 * 1024  # DENIS_WS_MAX_FRAME_BYTES for this server
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
LEAK = re.compile(r"Traceback|File \"|line \d+, in ")

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
message_types = st.sampled_from(["auth", "chat", "ping", "pong", "status", "reply", ""])
shaped = st.fixed_dictionaries(
    {"type": message_types | json_values},
    optional={
        "id": json_values,
        "text": json_values | st.text(min_size=1, max_size=200),
        "token": json_values | st.just("denis_" + "A" * 43) | st.text(min_size=300),
        "t": json_values,
        "session_id": json_values,
        "lang": st.sampled_from(["en", "es", "fr", None]) | json_values,
    },
)


def deep(depth: int, *, objects: bool) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if objects else "[" * depth + "]" * depth


raw_json_oddities = st.sampled_from(
    [
        '{"type": "ping", "id": 1, "t": NaN}',
        '{"type": "ping", "id": 1, "t": Infinity}',
        '{"type": "ping", "id": 1, "t": 1e999}',
        '{"type": "ping", "id": ' + "9" * 5000 + "}",
        '{"type": "chat", "id": "\\ud800", "text": "\\udfff hi"}',
        '{"type": "chat", "text": "hi"',
        '{"type": "chat", "type": "ping"}',
        "\ufeff{}",
        "",
    ]
)
text_frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    shaped.map(json.dumps),
    st.builds(deep, st.integers(30, 6000), objects=st.booleans()),
    raw_json_oddities,
    st.integers(FRAME_LIMIT + 1, 4 * FRAME_LIMIT).map(lambda n: "x" * n),
)
frames = text_frames | st.binary(max_size=200) | text_frames.map(lambda t: t.encode())


@dataclass(frozen=True)
class Target:
    proc: DenisProcess
    token: str

    @property
    def url(self) -> str:
        return self.proc.ws_url


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp("fuzz-ws") / "data"
    token = create_token(data_dir, "alice")
    proc = DenisProcess(
        data_dir,
        {
            "DENIS_CHAT_TIMEOUT_S": "3",
            "DENIS_WS_MAX_FRAME_BYTES": str(FRAME_LIMIT),
            "DENIS_WS_RECONNECT_LIMIT": "10000",
            "DENIS_WS_MAX_FRAMES_PER_S": "10000",
            "DENIS_RATE_LIMIT_USER": "100000/minute",
            "DENIS_RATE_LIMIT_CLIENT": "100000/minute",
            "DENIS_BUDGET_TOKENS_PER_DAY": "100000000",
        },
    )
    proc.start()
    try:
        yield Target(proc, token)
    finally:
        proc.stop()


def strict(literal: str) -> Any:
    raise AssertionError(f"the server sent {literal}, which is not JSON")


def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not a status push; strict JSON, no traceback."""
    while True:
        raw = ws.recv(timeout=NO_HANG_S)
        assert isinstance(raw, str)
        assert not LEAK.search(raw), raw[:500]
        message = json.loads(raw, parse_constant=strict)
        assert isinstance(message, dict)
        if message.get("type") != "status":
            return message


def assert_error_message(message: dict[str, Any]) -> None:
    assert message["type"] == "error", message
    assert set(message["error"]) == {"code", "detail"}
    assert isinstance(message["error"]["detail"], str)
    assert message["error"]["detail"]


def authenticate(ws: ClientConnection, token: str) -> None:
    ws.send(json.dumps({"type": "auth", "token": token}))
    assert receive(ws)["type"] == "auth_ok"
    assert receive(ws)["type"] == "ready"


def oversized(frame: str | bytes) -> bool:
    return len(frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogatepass")) > (
        FRAME_LIMIT
    )


def sendable(frame: str | bytes) -> bool:
    """A text frame must be valid UTF-8 on the wire (the client refuses lone surrogates)."""
    if isinstance(frame, bytes):
        return True
    try:
        frame.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_frames_before_auth_are_refused_1008(target: Target) -> None:
    offset = log_size(target.proc)

    @FUZZ
    @given(frame=frames)
    def run(frame: str | bytes) -> None:
        if not sendable(frame):
            return
        with connect(target.url, open_timeout=NO_HANG_S, max_size=None) as ws:
            ws.send(frame)
            if not oversized(frame):
                assert_error_message(receive(ws))
            with pytest.raises(ConnectionClosed) as closed:
                receive(ws)
            code = closed.value.rcvd.code if closed.value.rcvd else None
            assert code == (MESSAGE_TOO_BIG if oversized(frame) else POLICY_VIOLATION)

    run()
    assert log_problems(target.proc, offset) == []


def test_chat_before_auth_is_refused_1008(target: Target) -> None:
    with connect(target.url, open_timeout=NO_HANG_S) as ws:
        ws.send(json.dumps({"type": "chat", "id": 1, "text": "unlock the front door"}))
        message = receive(ws)
        assert_error_message(message)
        assert message["error"]["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            receive(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == POLICY_VIOLATION


def test_every_frame_after_auth_gets_its_answer(target: Target) -> None:
    offset = log_size(target.proc)

    @FUZZ
    @given(batch=st.lists(frames, min_size=1, max_size=4))
    def run(batch: list[str | bytes]) -> None:
        with connect(target.url, open_timeout=NO_HANG_S, max_size=None) as ws:
            authenticate(ws, target.token)
            for frame in batch:
                if not sendable(frame):
                    continue
                ws.send(frame)
                if oversized(frame):
                    with pytest.raises(ConnectionClosed) as closed:
                        receive(ws)
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == MESSAGE_TOO_BIG
                    return
                message = receive(ws)
                assert message["type"] in ("error", "pong", "reply"), message
                if message["type"] == "error":
                    assert_error_message(message)
            ws.send(json.dumps({"type": "ping", "id": "last"}))  # still usable
            assert receive(ws) == {"type": "pong", "id": "last"}

    run()
    assert log_problems(target.proc, offset) == []
