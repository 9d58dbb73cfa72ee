"""Hostile and malformed input to ``POST /chat``: each gets its DESIGN.md code, nothing else.

Every error body is exactly ``{"error": {"code", "detail"}}`` (no traceback), and a refused
request leaves nothing behind (it does not spend rate-limit budget).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import probes

MAX_BODY = 1024  # the smallest max_body_bytes Settings accepts


def assert_error(response, status: int, code: str) -> str:
    """``probes.assert_error``, with no source path either and the trace id header."""
    detail = probes.assert_error(response, status, code)
    assert "File " not in response.text
    assert response.headers["x-trace-id"]
    return detail


def post_raw(client: TestClient, auth: dict[str, str], content, **headers: str):
    return client.post(
        "/chat", content=content, headers={**auth, "Content-Type": "application/json", **headers}
    )


INVALID_BODIES = [
    pytest.param(b"", id="empty-body"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"text": "hi"', id="truncated-json"),
    pytest.param(b'{"text": "hi",}', id="trailing-comma"),
    pytest.param(b'["hello"]', id="array"),
    pytest.param(b'"hello"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="bool"),
    pytest.param(b"{}", id="no-text"),
    pytest.param(b'{"text": ""}', id="empty-text"),
    pytest.param(b'{"text": "   \\n\\t  "}', id="whitespace-text"),
    pytest.param(b'{"text": "\\u00a0\\u3000"}', id="unicode-whitespace-text"),
    pytest.param(b'{"text": 123}', id="text-int"),
    pytest.param(b'{"text": null}', id="text-null"),
    pytest.param(b'{"text": ["hello"]}', id="text-list"),
    pytest.param(b'{"text": {"a": 1}}', id="text-object"),
    pytest.param(b'{"text": "hello", "lang": "fr"}', id="lang-fr"),
    pytest.param(b'{"text": "hello", "lang": "EN"}', id="lang-caps"),
    pytest.param(b'{"text": "hello", "lang": 1}', id="lang-int"),
    pytest.param(b'{"text": "hello", "session_id": "bad id!"}', id="session-space"),
    pytest.param(b'{"text": "hello", "session_id": "../etc/passwd"}', id="session-slash"),
    pytest.param(b'{"text": "hello", "session_id": "<script>"}', id="session-markup"),
    pytest.param(b'{"text": "hello", "session_id": ""}', id="session-empty"),
    pytest.param(b'{"text": "hello", "session_id": 7}', id="session-int"),
    pytest.param(
        json.dumps({"text": "hello", "session_id": "s" * 129}).encode(), id="session-too-long"
    ),
    pytest.param(b'{"text": "hi \xff\xfe there"}', id="invalid-utf8-in-string"),
    pytest.param(b"\xc3\x28\xa0\xa1", id="invalid-utf8-body"),
    pytest.param(b'{"text": "caf\xe9"}', id="latin1-body"),
]


@pytest.mark.parametrize("content", INVALID_BODIES)
def test_invalid_bodies_are_422_invalid_input(make_client, auth, content: bytes) -> None:
    client = make_client()
    assert_error(post_raw(client, auth, content), 422, "invalid_input")


def test_the_detail_names_the_bad_field_without_echoing_the_value(make_client, auth) -> None:
    client = make_client()
    detail = assert_error(
        client.post("/chat", json={"text": "hi", "lang": "klingon-xyz"}, headers=auth),
        422,
        "invalid_input",
    )
    assert "lang" in detail
    assert "klingon-xyz" not in detail


def test_text_of_exactly_the_limit_is_answered(make_client, auth) -> None:
    client = make_client()
    for text in ("a" * 4000, "ñ" * 4000, "🙂" * 4000):
        response = client.post("/chat", json={"text": text}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["reply"]


@pytest.mark.parametrize("text", ["a" * 4001, "ñ" * 4001, " " * 4001, "x" * 20_000])
def test_text_over_the_limit_is_413_too_large(make_client, auth, text: str) -> None:
    client = make_client()
    assert_error(client.post("/chat", json={"text": text}, headers=auth), 413, "too_large")


def _body_of_exactly(size: int) -> bytes:
    prefix, suffix = b'{"text": "', b'"}'
    body = prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix
    assert len(body) == size
    return body


def test_body_of_exactly_max_body_bytes_is_answered(make_client, auth) -> None:
    client = make_client(max_body_bytes=MAX_BODY)
    response = post_raw(client, auth, _body_of_exactly(MAX_BODY))
    assert response.status_code == 200, response.text


def test_body_over_max_body_bytes_is_413(make_client, auth) -> None:
    client = make_client(max_body_bytes=MAX_BODY)
    assert_error(post_raw(client, auth, _body_of_exactly(MAX_BODY + 1)), 413, "too_large")


def test_body_over_max_body_bytes_with_a_lying_content_length_is_413(make_client, auth) -> None:
    client = make_client(max_body_bytes=MAX_BODY)
    response = post_raw(client, auth, _body_of_exactly(3 * MAX_BODY), **{"Content-Length": "20"})
    assert_error(response, 413, "too_large")


def test_chunked_body_without_content_length_is_counted_while_streaming(make_client, auth) -> None:
    client = make_client(max_body_bytes=MAX_BODY)

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(50):
            yield b"a" * 100
        yield b'"}'

    assert_error(post_raw(client, auth, chunks()), 413, "too_large")


def test_small_chunked_body_is_answered(make_client, auth) -> None:
    client = make_client(max_body_bytes=MAX_BODY)

    def chunks() -> Iterator[bytes]:
        yield b'{"text": '
        yield b'"what time is it?"}'

    response = post_raw(client, auth, chunks())
    assert response.status_code == 200, response.text
    assert response.json()["intent"] == "HassGetCurrentTime"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 100_000, id="unclosed-arrays"),
        pytest.param(b"[" * 50_000 + b"]" * 50_000, id="closed-arrays"),
        pytest.param(b'{"a":' * 30_000 + b"1" + b"}" * 30_000, id="nested-objects"),
    ],
)
def test_deeply_nested_json_is_422_not_a_crash(make_client, auth, content: bytes) -> None:
    client = make_client(max_body_bytes=512 * 1024)
    assert_error(post_raw(client, auth, content), 422, "invalid_input")
    # the process is fine afterwards
    assert client.post("/chat", json={"text": "hello"}, headers=auth).status_code == 200


def test_deeply_nested_json_over_the_default_size_limit_is_413(make_client, auth) -> None:
    client = make_client()  # default max_body_bytes is 64 KiB
    assert_error(post_raw(client, auth, b"[" * 100_000), 413, "too_large")


@pytest.mark.parametrize(
    "hop", ["abc", "-1", "1.5", "0x2", "", " ", "123456789", "\u0663".encode()]
)
def test_malformed_hop_header_is_422(make_client, auth, hop: str | bytes) -> None:
    client = make_client()
    response = client.post("/chat", json={"text": "hello"}, headers={**auth, "X-Denis-Hop": hop})
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize("hop", ["4", "5", "99999999"])
def test_hop_header_over_the_limit_is_508(make_client, auth, hop: str) -> None:
    client = make_client()
    response = client.post("/chat", json={"text": "hello"}, headers={**auth, "X-Denis-Hop": hop})
    assert_error(response, 508, "hop_limit")


@pytest.mark.parametrize("hop", ["0", "1", "3", " 2 "])
def test_hop_header_within_the_limit_is_answered(make_client, auth, hop: str) -> None:
    client = make_client()
    response = client.post("/chat", json={"text": "hello"}, headers={**auth, "X-Denis-Hop": hop})
    assert response.status_code == 200, response.text


def test_refused_requests_do_not_spend_rate_limit_budget(make_client, auth) -> None:
    client = make_client(rate_limit_user="2/minute", max_body_bytes=MAX_BODY)
    hello = {"text": "hello"}
    refused = [
        post_raw(client, auth, b"not json"),
        post_raw(client, auth, b"[1, 2]"),
        post_raw(client, auth, b'{"text": "   "}'),
        post_raw(client, auth, b'{"text": 123}'),
        post_raw(client, auth, b'{"text": "hi", "lang": "fr"}'),
        post_raw(client, auth, b'{"text": "\xff"}'),
        post_raw(client, auth, json.dumps({"text": "a" * 4001}).encode()),
        post_raw(client, auth, _body_of_exactly(MAX_BODY + 1)),
        post_raw(client, auth, b"[" * 900),
        client.post("/chat", json=hello, headers={**auth, "X-Denis-Hop": "x"}),
        client.post("/chat", json=hello, headers={**auth, "X-Denis-Hop": "4"}),
        client.post("/chat", json=hello),
        client.post("/chat", json=hello, headers={"Authorization": "Bearer denis_nope"}),
    ]
    assert [r.status_code for r in refused] == [
        422, 422, 422, 422, 422, 422, 413, 413, 422, 422, 508, 401, 401,
    ]  # fmt: skip
    for response in refused:
        assert set(response.json()) == {"error"}

    assert client.post("/chat", json=hello, headers=auth).status_code == 200
    assert client.post("/chat", json=hello, headers=auth).status_code == 200
    # ... and the limit is real: the third valid one is refused
    assert_error(client.post("/chat", json=hello, headers=auth), 429, "rate_limited")


def test_unknown_extra_fields_are_ignored(make_client, auth) -> None:
    client = make_client()
    response = client.post(
        "/chat",
        json={"text": "¿qué hora es?", "lang": "es", "session_id": "kitchen:1", "x": [1]},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lang"] == "es"
    assert body["intent"] == "HassGetCurrentTime"
