"""Home Assistant hung (SIGSTOP), dead (SIGKILL) and back, under the Home Assistant backend with a
circuit breaker: every call ends within its timeout as ``HomeUnavailableError``, the breaker
opens after its threshold so later calls fail without trying, and once Home Assistant is back the
half-open probe closes it and commands work again.

Each test gets a Home Assistant of its own (started from the session's onboarded storage). The
breaker runs on a manual clock, so "after the cool-down" is a step, not a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from denis.assistant.home import HomeAssistant, HomeUnavailableError
from denis.resilience import CircuitBreaker, ManualClock
from servers import HomeAssistantServer

pytestmark = pytest.mark.chaos

LIGHT = "light.bed_light"
TIMEOUT_S = 1.0
THRESHOLD = 3
COOLDOWN_S = 30.0


class Home:
    def __init__(self, server: HomeAssistantServer) -> None:
        self.server = server
        self.clock = ManualClock()
        self.breaker = CircuitBreaker(
            "home", failure_threshold=THRESHOLD, cooldown_s=COOLDOWN_S, clock=self.clock
        )
        self.backend = HomeAssistant(server.url, server.token, TIMEOUT_S, self.breaker)

    def fails(self, match: str) -> HomeUnavailableError:
        """One command that must fail as ``HomeUnavailableError`` without hanging."""
        began = time.monotonic()
        with pytest.raises(HomeUnavailableError, match=match) as raised:
            self.backend.call(LIGHT, "turn_on", {})
        assert time.monotonic() - began < TIMEOUT_S + 1  # did not hang
        return raised.value

    def fails_fast(self) -> None:
        """The breaker is open: refused without trying (well inside the timeout)."""
        began = time.monotonic()
        error = self.fails("circuit open")
        assert time.monotonic() - began < TIMEOUT_S
        assert error.retry_after_s is not None
        assert error.retry_after_s >= 1

    def works(self) -> None:
        assert self.backend.call(LIGHT, "turn_on", {}).state == "on"
        assert self.backend.call(LIGHT, "turn_off", {}).state == "off"


@pytest.fixture
def home(home_assistant_factory: Callable[[], HomeAssistantServer]) -> Iterator[Home]:
    home = Home(home_assistant_factory())
    try:
        yield home
    finally:
        home.backend.close()


def test_a_hung_home_assistant_times_out_and_opens_the_breaker(home: Home) -> None:
    home.works()
    home.server.pause()
    for _ in range(THRESHOLD):
        home.fails("did not answer within")
    assert home.breaker.state == "open"
    home.fails_fast()
    home.clock.advance(COOLDOWN_S)  # half-open: one probe, still hung, so open again
    home.fails("did not answer within")
    assert home.breaker.state == "open"
    home.fails_fast()

    home.server.resume()
    home.fails_fast()  # back, but the breaker has not tried it yet
    home.clock.advance(COOLDOWN_S)
    home.works()  # the probe succeeds and closes the breaker
    assert home.breaker.state == "closed"


def test_a_killed_home_assistant_is_refused_at_once_and_works_after_a_restart(
    home: Home,
) -> None:
    home.works()
    home.server.kill()
    for _ in range(THRESHOLD):
        began = time.monotonic()
        home.fails("cannot reach Home Assistant")
        assert time.monotonic() - began < TIMEOUT_S  # refused, not waited for
    assert home.breaker.state == "open"
    home.fails_fast()

    home.server.restart()  # same port, same storage: the token still works
    home.clock.advance(COOLDOWN_S)
    home.works()
    assert home.breaker.state == "closed"


def test_a_pause_between_commands_is_survived_without_the_breaker(home: Home) -> None:
    """Fewer failures than the threshold: the breaker stays closed and the next command works
    as soon as Home Assistant answers again."""
    home.server.pause()
    home.fails("did not answer within")
    home.server.resume()
    home.works()
    assert home.breaker.state == "closed"
