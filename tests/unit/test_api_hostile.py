"""Hostile input at the edge (issue 7): limits answered with their codes, the fuzzers' findings
as named regression tests, security headers, CORS, the WebSocket's Origin and connection cap,
admin routes and stored tokens.

Findings kept here (each was a 503 ``unavailable`` from the containment middleware, or a reply a
browser could not parse, before its fix):

- an integer of more than 4300 digits made ``json.loads`` raise a plain ``ValueError``;
- ``NaN``, ``Infinity`` and ``1e999`` were accepted, and a ping's ``t`` came back as ``NaN``,
  which is not JSON to a browser (and a job's args holding one could not be listed again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from denis.api.body import MAX_JSON_DEPTH
from denis.api.security import CONTENT_SECURITY_POLICY, same_origin
from denis.sync_plane import TokenStore
from probes import assert_error

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
ADMIN_ROUTES = [
    ("POST", "/jobs"),
    ("GET", "/admin/dlq"),
    ("DELETE", "/admin/dlq"),
    ("POST", "/admin/dlq/replay"),
    ("POST", "/admin/dlq/some-key/replay"),
]
BODY_ROUTES = ["/chat", "/jobs", "/telemetry"]
POST_ROUTES = [*BODY_ROUTES, "/admin/dlq/replay", "/admin/dlq/some-key/replay"]


def strict_json(literal: str) -> Any:
    raise AssertionError(f"{literal} is not JSON")


def nested(depth: int) -> Any:
    """``depth`` levels of arrays and objects, alternating, around a 1."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def body_for(path: str, extra: Any) -> dict[str, Any]:
    if path == "/chat":
        return {"text": "hello", "x": extra}
    if path == "/jobs":
        return {"name": "no.such.job", "args": {"x": extra}}
    return {"events": [{"type": "rtt", "at": 1, "detail": "d"}], "x": extra}


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


# -- fuzzing findings -----------------------------------------------------------------------


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_an_integer_over_4300_digits_is_422_not_503(make_client, admin, path: str) -> None:
    client = make_client()
    content = json.dumps(body_for(path, 0)).replace("0", "9" * 5000, 1).encode()
    response = client.post(path, content=content, headers=admin)
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("path", BODY_ROUTES)
def test_nan_and_infinity_are_422(make_client, admin, path: str, literal: str) -> None:
    client = make_client()
    content = json.dumps(body_for(path, "@")).replace('"@"', literal).encode()
    response = client.post(path, content=content, headers=admin)
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_a_ping_with_a_non_finite_t_is_an_error_not_a_nan_pong(
    make_client, token: str, literal: str
) -> None:
    client = make_client(ws_status_s=3600)
    with client.websocket_connect("/chat") as ws:
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json()["type"] == "auth_ok"
        assert ws.receive_json()["type"] == "ready"
        ws.send_text('{"type": "ping", "id": 1, "t": ' + literal + "}")
        answer = json.loads(ws.receive_text(), parse_constant=strict_json)  # as JSON.parse
        assert answer["error"]["code"] == "invalid_input"
        ws.send_text('{"type": "ping", "id": 2, "t": 12.5}')  # the socket is still usable
        assert ws.receive_json() == {"type": "pong", "id": 2, "t": 12.5}


def test_an_integer_over_4300_digits_before_auth_closes_1008_not_a_dropped_socket(
    make_client,
) -> None:
    """Found by the WebSocket fuzzer: the ``ValueError`` escaped and the socket was dropped
    with no close frame (and an ``api.unexpected_error`` line)."""
    client = make_client()
    with client.websocket_connect("/chat") as ws:
        ws.send_text('{"type": "auth", "token": ' + "9" * 5000 + "}")
        assert ws.receive_json()["error"]["code"] == "invalid_input"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == POLICY_VIOLATION


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_json_deeper_than_the_limit_is_422(make_client, admin, path: str) -> None:
    client = make_client()
    response = client.post(path, json=body_for(path, nested(MAX_JSON_DEPTH)), headers=admin)
    detail = assert_error(response, 422, "invalid_input")
    assert "nests more than" in detail


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
def test_deep_json_in_a_websocket_frame_is_an_in_band_422(
    make_client, token: str, depth: int
) -> None:
    client = make_client(ws_status_s=3600, ws_max_frame_bytes=1024 * 1024)
    with client.websocket_connect("/chat") as ws:
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json()["type"] == "auth_ok"
        assert ws.receive_json()["type"] == "ready"
        ws.send_text("[" * depth + "]" * depth)
        answer = ws.receive_json()
        assert answer["type"] == "error"
        assert answer["error"]["code"] in ("invalid_input", "too_large")


def test_json_exactly_at_the_depth_limit_is_answered(make_client, auth) -> None:
    # The body object is level 1, so the extra value may nest one level less.
    body = {"text": "hello", "x": nested(MAX_JSON_DEPTH - 1)}
    response = make_client().post("/chat", json=body, headers=auth)
    assert response.status_code == 200, response.text


def test_deep_json_before_auth_closes_the_socket_1008(make_client) -> None:
    client = make_client()
    with client.websocket_connect("/chat") as ws:
        ws.send_text("[" * 20_000 + "]" * 20_000)
        assert ws.receive_json()["error"]["code"] == "invalid_input"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == POLICY_VIOLATION


@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_declared_body_over_the_limit_is_413_on_every_post_route(
    make_client, admin, path: str
) -> None:
    client = make_client(max_body_bytes=1024)
    response = client.post(path, content=b"x" * 2048, headers=admin)
    assert_error(response, 413, "too_large")


def test_a_declared_body_over_the_limit_is_413_even_without_a_token(make_client) -> None:
    response = make_client(max_body_bytes=1024).post("/chat", content=b"x" * 2048)
    assert_error(response, 413, "too_large")


def test_websocket_connections_per_client_are_capped_1013_with_a_retry_hint(
    make_client, token: str
) -> None:
    client = make_client(ws_max_connections_per_client=2, ws_status_s=3600)
    with client.websocket_connect("/chat") as first, client.websocket_connect("/chat") as second:
        for ws in (first, second):
            ws.send_json({"type": "auth", "token": token})
            assert ws.receive_json()["type"] == "auth_ok"
            assert ws.receive_json()["type"] == "ready"
        with client.websocket_connect("/chat") as third:
            with pytest.raises(WebSocketDisconnect) as closed:
                third.receive_json()
            assert closed.value.code == TRY_AGAIN_LATER
            assert json.loads(closed.value.reason) == {"retry_after_s": 5}
        first.send_json({"type": "ping", "id": 1})  # the open ones are unaffected
        assert first.receive_json() == {"type": "pong", "id": 1}
    with client.websocket_connect("/chat") as again:  # closing them frees the slots
        again.send_json({"type": "auth", "token": token})
        assert again.receive_json()["type"] == "auth_ok"


# -- security headers and CORS ----------------------------------------------------------------


def test_every_response_carries_the_csp_and_permissions_policy(make_client, auth) -> None:
    client = make_client(max_body_bytes=1024)
    responses = [
        client.get("/"),
        client.get("/static/js/app.js"),
        client.get("/healthz"),
        client.get("/status", headers=auth),
        client.get("/status"),
        client.get("/nope"),
        client.post("/chat", content=b"x" * 2048, headers=auth),
    ]
    for response in responses:
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["permissions-policy"] == "microphone=(self)"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers.get_list("content-security-policy") == [CONTENT_SECURITY_POLICY]


def test_the_web_app_has_no_inline_script_or_style() -> None:
    """The CSP allows scripts and styles from files only; the page must not need more."""
    web = Path(__file__).resolve().parents[2] / "src" / "denis" / "web"
    html = (web / "index.html").read_text(encoding="utf-8").lower()
    assert "<style" not in html
    assert " style=" not in html
    for chunk in html.split("<script")[1:]:
        assert " src=" in chunk.split(">", 1)[0]
    assert " on" not in html.replace(" one", "").split("<body", 1)[1].split(">", 1)[0]


def test_no_cross_origin_access_by_default(make_client, auth) -> None:
    client = make_client()
    response = client.get("/status", headers={**auth, "Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/chat",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert_error(preflight, 403, "forbidden")
    assert "access-control-allow-origin" not in preflight.headers


def test_a_listed_origin_gets_cors_headers_and_its_preflight_answered(make_client, auth) -> None:
    client = make_client(cors_origins="https://home.example, http://10.0.0.5:8084")
    origin = {"Origin": "https://home.example"}
    response = client.post("/chat", json={"text": "hello"}, headers={**auth, **origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://home.example"
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-credentials" not in response.headers
    preflight = client.options(
        "/chat",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://home.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# -- WebSocket Origin ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://testserver.evil.example", "null", "file://"]
)
def test_a_cross_origin_websocket_is_closed_1008(make_client, origin: str) -> None:
    client = make_client()
    with client.websocket_connect("/chat", headers={"Origin": origin}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == POLICY_VIOLATION
        assert closed.value.reason == "origin_not_allowed"


@pytest.mark.parametrize("origin", [None, "http://testserver", "https://home.example"])
def test_same_origin_listed_or_no_origin_websockets_are_accepted(
    make_client, token: str, origin: str | None
) -> None:
    client = make_client(cors_origins="https://home.example")
    headers = {"Origin": origin} if origin else {}
    with client.websocket_connect("/chat", headers=headers) as ws:
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json()["type"] == "auth_ok"


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8084", "127.0.0.1:8084", True),
        ("https://denis.example", "denis.example", True),
        ("https://denis.example", "denis.example:443", True),
        ("http://Denis.Example:80", "denis.example", True),
        ("http://[::1]:8084", "[::1]:8084", True),
        ("http://127.0.0.1:8085", "127.0.0.1:8084", False),
        ("https://denis.example.evil", "denis.example", False),
        ("null", "denis.example", False),
        ("http://denis.example", None, False),
        ("ftp://denis.example", "denis.example", False),
        ("http://[::1", "denis.example", False),
    ],
)
def test_same_origin(origin: str, host: str | None, *, same: bool) -> None:
    assert same_origin(origin, host) is same


# -- admin routes and tokens ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_refuse_a_user_token_403(make_client, auth, method: str, path: str) -> None:
    client = make_client()
    response = client.request(method, path, headers=auth, json={"name": "x"})
    assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_answer_an_admin_token(make_client, admin, method: str, path: str) -> None:
    client = make_client()
    response = client.request(method, path, headers=admin, json={"name": "no.such.job"})
    assert response.status_code not in (401, 403), response.text
    assert response.status_code < 500, response.text


def test_tokens_are_stored_as_sha256_digests_only(data_dir: Path) -> None:
    store = TokenStore(data_dir)
    secret = store.create("alice")
    text = (data_dir / "tokens.json").read_text(encoding="utf-8")
    assert secret not in text
    assert secret.removeprefix("denis_") not in text
    (record,) = json.loads(text)["tokens"]
    assert set(record) == {"id", "user", "admin", "label", "sha256", "created"}
    assert store.authenticate(secret).user == "alice"
    assert (data_dir / "tokens.json").stat().st_mode & 0o077 == 0
