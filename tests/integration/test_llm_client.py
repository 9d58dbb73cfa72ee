"""The LLM client against a real local OpenAI-compatible HTTP server (``fake_llm.FakeLlm``):
answers and token counts, every way the endpoint can fail, the deadline, the breaker, and the
API key kept out of errors and logs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from denis.assistant.llm import LlmAnswer, LlmClient, open_llm
from denis.errors import DependencyUnavailableError
from denis.resilience import (
    BreakerState,
    Deadline,
    HealthBoard,
    ManualClock,
    MonotonicClock,
    Signals,
)
from denis.resilience.metrics import Metrics
from denis.settings import AssistantSettings, Settings
from servers import free_port

pytestmark = pytest.mark.integration

API_KEY = "sk-test-0123456789abcdef-SECRET"
MESSAGES = [
    {"role": "system", "content": "You are Denis."},
    {"role": "user", "content": "what is a heat pump?"},
]
WALL = MonotonicClock()


@pytest.fixture
def signals() -> Signals:
    return Signals(Metrics(CollectorRegistry()))


@pytest.fixture
async def make_llm(
    tmp_path: Path, signals: Signals
) -> AsyncIterator[Callable[..., tuple[LlmClient, ManualClock]]]:
    clients: list[LlmClient] = []

    def make(url: str | None, **overrides: Any) -> tuple[LlmClient, ManualClock]:
        overrides.setdefault("llm_api_key", API_KEY)
        settings: AssistantSettings = Settings(
            data_dir=tmp_path, llm_url=url, llm_model="tiny-test", **overrides
        ).assistant
        breaker_clock = ManualClock()
        client = open_llm(settings, signals, breaker_clock, HealthBoard(signals))
        clients.append(client)
        return client, breaker_clock

    yield make
    for client in clients:
        await client.aclose()


def deadline(budget_s: float = 10.0) -> Deadline:
    return Deadline.start(WALL, budget_s)


async def test_answer_and_usage_and_the_request_sent(fake_llm, make_llm) -> None:
    fake_llm.reply = "A heat pump moves heat."
    client, _ = make_llm(fake_llm.url, llm_max_tokens=99)

    answer = await client.complete(MESSAGES, deadline())

    assert answer == LlmAnswer("A heat pump moves heat.", 18)
    [seen] = fake_llm.seen()
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen.body["model"] == "tiny-test"
    assert seen.body["messages"] == MESSAGES
    assert seen.body["max_tokens"] == 99
    assert client.configured


async def test_no_api_key_sends_no_authorization_header(fake_llm, make_llm) -> None:
    client, _ = make_llm(fake_llm.url, llm_api_key=None)

    answer = await client.complete(MESSAGES, deadline())

    assert answer.text == "echo: what is a heat pump?"
    assert "Authorization" not in fake_llm.seen()[0].headers


async def test_without_usage_the_tokens_are_estimated(fake_llm, make_llm) -> None:
    fake_llm.usage = False
    fake_llm.reply = "x" * 40
    client, _ = make_llm(fake_llm.url)

    answer = await client.complete(MESSAGES, deadline())

    prompt_chars = sum(len(m["content"]) for m in MESSAGES)
    assert answer.tokens_used == (prompt_chars + 40) // 4


@pytest.mark.parametrize("mode", ["failing", "malformed"])
async def test_a_bad_answer_is_dependency_unavailable(fake_llm, make_llm, mode) -> None:
    fake_llm.mode = mode
    client, _ = make_llm(fake_llm.url)

    with pytest.raises(DependencyUnavailableError) as caught:
        await client.complete(MESSAGES, deadline())

    assert caught.value.dependency == "llm"
    assert caught.value.detail
    assert len(fake_llm.seen()) == 1  # no retry


async def test_an_answer_without_choices_is_dependency_unavailable(fake_llm, make_llm) -> None:
    fake_llm.reply = ""  # an empty content is no answer either
    client, _ = make_llm(fake_llm.url)

    with pytest.raises(DependencyUnavailableError, match="no answer"):
        await client.complete(MESSAGES, deadline())


async def test_a_refused_connection_is_dependency_unavailable(make_llm) -> None:
    client, _ = make_llm(f"http://127.0.0.1:{free_port()}/v1")

    with pytest.raises(DependencyUnavailableError, match="could not be reached"):
        await client.complete(MESSAGES, deadline())


async def test_not_configured_fails_without_a_request(make_llm) -> None:
    client, _ = make_llm(None)

    assert not client.configured
    with pytest.raises(DependencyUnavailableError, match="no LLM"):
        await client.complete(MESSAGES, deadline())


async def test_a_hung_server_fails_within_the_llm_timeout(fake_llm, make_llm) -> None:
    fake_llm.mode = "hung"
    client, _ = make_llm(fake_llm.url, llm_timeout_s=0.5)
    started_s = time.monotonic()

    with pytest.raises(DependencyUnavailableError, match="in time"):
        await client.complete(MESSAGES, deadline(30.0))

    assert time.monotonic() - started_s < 10.0  # did not hang (generous bound)


async def test_a_slow_server_is_given_up_on_before_the_request_deadline(fake_llm, make_llm) -> None:
    fake_llm.mode = "slow"
    fake_llm.delay_s = 30.0
    client, _ = make_llm(fake_llm.url, llm_timeout_s=60.0)
    request_deadline = deadline(1.0)

    with pytest.raises(DependencyUnavailableError):
        await client.complete(MESSAGES, request_deadline)

    assert not request_deadline.expired  # time was left to send the reply


async def test_no_time_left_means_no_request(fake_llm, make_llm) -> None:
    client, _ = make_llm(fake_llm.url)
    clock = ManualClock()
    almost_over = Deadline.start(clock, 1.0)
    clock.advance(0.9)

    with pytest.raises(DependencyUnavailableError):
        await client.complete(MESSAGES, almost_over)

    assert fake_llm.seen() == []


async def test_the_breaker_opens_then_a_probe_closes_it(fake_llm, make_llm) -> None:
    fake_llm.mode = "failing"
    client, breaker_clock = make_llm(
        fake_llm.url, llm_breaker_threshold=3, llm_breaker_cooldown_s=30.0
    )

    for _ in range(3):
        with pytest.raises(DependencyUnavailableError):
            await client.complete(MESSAGES, deadline())
    assert client.breaker.state is BreakerState.OPEN

    with pytest.raises(DependencyUnavailableError, match="circuit open") as caught:
        await client.complete(MESSAGES, deadline())
    assert caught.value.retry_after_s is not None
    assert caught.value.retry_after_s >= 1.0
    assert len(fake_llm.seen()) == 3  # the open breaker sent nothing

    fake_llm.mode = "normal"
    breaker_clock.advance(30.0)
    answer = await client.complete(MESSAGES, deadline())

    assert answer.text == "echo: what is a heat pump?"
    assert client.breaker.state is BreakerState.CLOSED
    assert len(fake_llm.seen()) == 4


async def test_timeouts_count_as_breaker_failures(fake_llm, make_llm) -> None:
    fake_llm.mode = "hung"
    client, _ = make_llm(fake_llm.url, llm_timeout_s=0.2, llm_breaker_threshold=2)

    for _ in range(2):
        with pytest.raises(DependencyUnavailableError):
            await client.complete(MESSAGES, deadline())

    assert client.breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("mode", ["failing", "malformed", "hung", "refused"])
async def test_the_api_key_is_never_in_errors_or_logs(fake_llm, make_llm, mode) -> None:
    url = fake_llm.url
    if mode == "refused":
        url = f"http://127.0.0.1:{free_port()}/v1"
    else:
        fake_llm.mode = mode
    client, _ = make_llm(url, llm_timeout_s=0.3, llm_breaker_threshold=2)
    errors: list[DependencyUnavailableError] = []

    with capture_logs() as logs:
        for _ in range(3):  # fails, opens the breaker, fails fast
            try:
                await client.complete(MESSAGES, deadline())
            except DependencyUnavailableError as exc:
                errors.append(exc)
        fake_llm.mode = "normal"

    assert len(errors) == 3
    for exc in errors:
        assert API_KEY not in exc.detail
        assert API_KEY not in repr(exc)
        assert exc.__cause__ is None
    assert logs  # the failure and the breaker opening were logged ...
    assert API_KEY not in repr(logs)  # ... without the key
    unavailable = [entry for entry in logs if entry["event"] == "llm.unavailable"]
    assert len(unavailable) == 1  # once per state change, not per request


async def test_recovery_is_noted_once(fake_llm, make_llm) -> None:
    fake_llm.mode = "failing"
    client, _ = make_llm(fake_llm.url, llm_breaker_threshold=5)

    with capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(DependencyUnavailableError):
                await client.complete(MESSAGES, deadline())
        fake_llm.mode = "normal"
        for _ in range(2):
            await client.complete(MESSAGES, deadline())

    events = [entry["event"] for entry in logs]
    assert events == ["llm.unavailable", "dependency.recovered"]
