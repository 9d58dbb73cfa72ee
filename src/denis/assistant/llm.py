"""The optional LLM: any OpenAI-compatible chat endpoint (``DENIS_LLM_URL``, e.g.
``http://host:port/v1``), asked with ``POST {base}/chat/completions``.

Owns: one ``httpx.AsyncClient`` with finite timeouts, the ``llm`` circuit breaker's verdicts,
and the translation of every way the endpoint can fail (refused, timed out, non-2xx, a body
that is not the expected JSON, an oversized body) into ``DependencyUnavailableError``
(dependency ``llm``) with a short detail that never carries the API key, the URL or the body.
Degrades: no retries; each call gets the smaller of ``llm_timeout_s`` and what is left of the
request minus a margin, so the reply can still be sent in time; a timeout is a failure; after
the breaker's threshold it opens and calls fail at once, without a request, until its
cool-down lets one probe through. The caller answers from intents and marks the reply ``llm``.
Logs ``llm.unavailable`` once when calls start failing and notes ``dependency.recovered`` once
when one succeeds again; never a line per request.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from denis.errors import DependencyUnavailableError
from denis.resilience import CircuitBreaker, Clock, Deadline, HealthBoard, Signal, Signals
from denis.settings import AssistantSettings

__all__ = ["LLM_DEPENDENCY", "LlmAnswer", "LlmClient", "open_llm"]

LLM_DEPENDENCY = "llm"
_log = structlog.get_logger("denis.assistant")
_REPLY_MARGIN_S = 0.25  # kept back from the request's deadline to send the reply
_MIN_CALL_S = 0.05  # less than this left: not worth a request
_MAX_BODY_BYTES = 1024 * 1024
_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class LlmAnswer:
    text: str
    tokens_used: int  # usage.total_tokens, or an estimate (chars/4 of prompt+answer)


class _BadReplyError(Exception):
    """The endpoint answered, but not with a usable chat completion (detail is secret-free)."""


class LlmClient:
    def __init__(
        self,
        settings: AssistantSettings,
        *,
        breaker: CircuitBreaker,
        signals: Signals,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._breaker = breaker
        self._signals = signals
        self._failing = False
        headers = {"Accept": "application/json"}
        if settings.llm_api_key:
            headers["Authorization"] = f"Bearer {settings.llm_api_key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.llm_timeout_s),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=4),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    @property
    def configured(self) -> bool:
        return self._settings.llm_url is not None

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def complete(self, messages: list[dict[str, str]], deadline: Deadline) -> LlmAnswer:
        """One chat completion; ``DependencyUnavailableError`` on any failure, never a retry."""
        if self._settings.llm_url is None:
            raise DependencyUnavailableError("no LLM is configured", dependency=LLM_DEPENDENCY)
        timeout_s = min(
            deadline.timeout_s(self._settings.llm_timeout_s),
            deadline.remaining_s() - _REPLY_MARGIN_S,
        )
        if timeout_s < _MIN_CALL_S:
            raise DependencyUnavailableError(
                "no time left to ask the LLM", dependency=LLM_DEPENDENCY
            )
        permit = self._breaker.try_acquire()
        if permit is None:
            raise DependencyUnavailableError(
                "the LLM is unavailable (circuit open)",
                dependency=LLM_DEPENDENCY,
                retry_after_s=max(self._breaker.retry_after_s(), 1.0),
            )
        try:
            async with asyncio.timeout(timeout_s):
                body = await self._post(self._settings.llm_url, messages, timeout_s)
            answer = self._parse(body, messages)
        except asyncio.CancelledError:
            self._breaker.release(permit)
            raise
        except (httpx.HTTPError, TimeoutError, _BadReplyError) as exc:
            self._breaker.record_failure(permit)
            detail = _detail(exc)
            self._enter_failing(detail, exc)
            # ``from None``: httpx's message may hold the URL, and a URL may hold credentials.
            raise DependencyUnavailableError(detail, dependency=LLM_DEPENDENCY) from None
        self._breaker.record_success(permit)
        self._leave_failing()
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, base_url: str, messages: list[dict[str, str]], timeout_s: float) -> bytes:
        request = {
            "model": self._settings.llm_model,
            "messages": messages,
            "max_tokens": self._settings.llm_max_tokens,
            "stream": False,
        }
        async with self._client.stream(
            "POST",
            f"{base_url}/chat/completions",
            json=request,
            timeout=httpx.Timeout(timeout_s),
        ) as response:
            if not response.is_success:
                raise _BadReplyError(f"the LLM answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > _MAX_BODY_BYTES:
                    raise _BadReplyError("the LLM's reply was too large")
                chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(body: bytes, messages: list[dict[str, str]]) -> LlmAnswer:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise _BadReplyError("the LLM's reply was not valid JSON") from None
        text = _answer_text(data)
        return LlmAnswer(text, _tokens_used(data, messages, text))

    def _enter_failing(self, detail: str, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            _log.warning("llm.unavailable", detail=detail, error=type(exc).__name__)

    def _leave_failing(self) -> None:
        if self._failing:
            self._failing = False
            self._signals.note(Signal.RECOVERED, dependency=LLM_DEPENDENCY, ended="llm.unavailable")


def _answer_text(data: Any) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _BadReplyError("the LLM's reply had no answer in it") from None
    if not isinstance(content, str) or not content.strip():
        raise _BadReplyError("the LLM's reply had no answer in it")
    return content.strip()


def _tokens_used(data: Any, messages: list[dict[str, str]], text: str) -> int:
    usage = data.get("usage") if isinstance(data, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    chars = sum(len(str(m.get("content", ""))) for m in messages) + len(text)
    return max(1, chars // _CHARS_PER_TOKEN)


def _detail(exc: BaseException) -> str:
    """A short description that names the failure, never the key, the URL or the body."""
    if isinstance(exc, _BadReplyError):
        return str(exc)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "the LLM did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "the LLM could not be reached"
    return "the LLM connection failed"


def open_llm(
    settings: AssistantSettings,
    signals: Signals,
    clock: Clock,
    health: HealthBoard | None = None,
) -> LlmClient:
    """The LLM client behind its own ``llm`` breaker (on ``/status`` when a board is given)."""
    breaker = CircuitBreaker.configured(LLM_DEPENDENCY, settings.llm_breaker, clock)
    if health is not None:
        health.add_breaker(breaker)
    return LlmClient(settings, breaker=breaker, signals=signals)
