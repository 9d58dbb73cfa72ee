"""The HTTP API fuzzed from its OpenAPI schema (schemathesis) against a real ``denis serve``.

The schema is ``create_app(settings).openapi()`` (it is not served: ``denis.api.openapi``).
Each operation gets schema-valid and schema-breaking cases, with an admin token (which may call
every route), a user token, or the Authorization header schemathesis generated (or left out).
Every answer must be: not a 5xx; declared in the schema with its content type and shape; an
error body exactly ``{"error": {"code", "detail"}}``; free of any Python traceback or exception
text. The server's log must hold no traceback and no ``api.unexpected_error``.

Bounded: ``EXAMPLES`` cases per operation (about 20 s for the module on 2 cores). Findings live
on as named tests in ``tests/unit/test_api_hostile.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, openapi
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from denis.app import create_app
from denis.settings import Settings
from probes import log_problems, log_size
from servers import DenisProcess, create_token

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]

EXAMPLES = 100
NO_HANG_S = 20.0  # generous: proves "did not hang" (the chat deadline is 3 s here)
OPERATIONS = [
    ("POST", "/chat"),
    ("POST", "/telemetry"),
    ("POST", "/jobs"),
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/admin/dlq"),
    ("DELETE", "/admin/dlq"),
    ("POST", "/admin/dlq/replay"),
    ("POST", "/admin/dlq/{key}/replay"),
]
# What a leaked Python error looks like in a body.
LEAK = re.compile(
    r"Traceback|File \"|line \d+, in |\b[A-Z]\w*(Error|Exception)\b|<(module|function|class) ",
)


@dataclass(frozen=True)
class Target:
    proc: DenisProcess
    admin: str
    user: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp("fuzz-http") / "data"
    admin = create_token(data_dir, "root", admin=True)
    user = create_token(data_dir, "alice")
    proc = DenisProcess(
        data_dir,
        {
            "DENIS_CHAT_TIMEOUT_S": "3",
            "DENIS_JOB_INLINE_TIMEOUT_S": "2",
            "DENIS_RATE_LIMIT_USER": "100000/minute",
            "DENIS_RATE_LIMIT_CLIENT": "100000/minute",
            "DENIS_BUDGET_TOKENS_PER_DAY": "100000000",
        },
    )
    proc.start()
    try:
        yield Target(proc, admin, user)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("fuzz-schema")))
    return openapi.from_dict(app.openapi())


def assert_clean(response: requests.Response) -> None:
    """No leak, and the error body's exact shape."""
    assert not LEAK.search(response.text), response.text[:500]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "detail"}, body
        assert isinstance(body["error"]["code"], str)
        assert isinstance(body["error"]["detail"], str)
        assert body["error"]["detail"]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzz_operation(target: Target, api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]
    offset = log_size(target.proc)
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    session = requests.Session()
    seen: set[int] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run; a failure is reproducible
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, who=st.sampled_from(["admin", "user", "as generated"]))
    def run(case: Any, who: str) -> None:
        headers = dict(case.headers or {})
        if who != "as generated":  # else: the case's own Authorization, or none
            token = target.admin if who == "admin" else target.user
            headers["Authorization"] = f"Bearer {token}"
        response = case.call(
            base_url=target.proc.url, session=session, headers=headers, timeout=NO_HANG_S
        )
        seen.add(response.status_code)
        assert_clean(response)
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    try:
        run()
    finally:
        session.close()
    assert seen  # the run made requests
    assert log_problems(target.proc, offset) == []


def test_the_schema_declares_every_route_but_the_web_app(api_schema: Any) -> None:
    raw = api_schema.raw_schema
    declared = {(m.upper(), p) for p, item in raw["paths"].items() for m in item}
    assert declared == set(OPERATIONS)
    chat = raw["paths"]["/chat"]["post"]
    assert chat["requestBody"]["required"] is True
    assert chat["security"] == [{"bearer": []}]
    assert "HTTPValidationError" not in str(raw)


def test_the_schema_is_not_served(target: Target) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        response = requests.get(
            target.proc.url + path,
            headers={"Authorization": f"Bearer {target.admin}"},
            timeout=NO_HANG_S,
        )
        assert response.status_code == 404
        assert_clean(response)
