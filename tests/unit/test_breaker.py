"""The permit-based circuit breaker, on a fake clock: a model-checked state machine plus the
``call()`` wrapper, cancellation and concurrency (asyncio tasks and threads)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Self

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from denis.errors import BreakerOpenError, DependencyUnavailableError
from denis.resilience import BreakerState, BreakerTransition, CircuitBreaker, ManualClock, Permit

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
VALID_EDGES = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}


def make_breaker(
    *, threshold: int = 3, cooldown_s: float = 10.0
) -> tuple[CircuitBreaker, ManualClock, list[BreakerTransition]]:
    clock = ManualClock()
    events: list[BreakerTransition] = []
    breaker = CircuitBreaker("dep", failure_threshold=threshold, cooldown_s=cooldown_s, clock=clock)
    breaker.add_listener(events.append)
    return breaker, clock, events


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(breaker.acquire())
    assert breaker.state is OPEN


def half_open_breaker(breaker: CircuitBreaker, clock: ManualClock) -> None:
    open_breaker(breaker)
    clock.advance(breaker.cooldown_s)
    assert breaker.state is HALF_OPEN


# -- the model-checked state machine ------------------------------------------------------


@dataclass
class Held:
    """A permit the test still holds, with the model's epoch when it was handed out."""

    permit: Permit
    epoch: int


class BreakerMachine(RuleBasedStateMachine):
    """Drives a real breaker and a tiny independent model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.events: list[BreakerTransition] = []
        self.expected: list[tuple[BreakerState, BreakerState]] = []
        self.held: list[Held] = []  # handed out, no verdict yet
        self.spent: list[Held] = []  # given a verdict or released already
        self.generations: dict[int, int] = {}  # model epoch -> permit generation seen
        # the model
        self.state = CLOSED
        self.epoch = 0
        self.failures = 0
        self.opened_at_s = 0.0
        self.probe_out = False

    @initialize(threshold=st.integers(1, 5), cooldown_s=st.sampled_from([1.0, 2.5, 10.0]))
    def setup(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.breaker = CircuitBreaker(
            "model",
            failure_threshold=threshold,
            cooldown_s=cooldown_s,
            clock=self.clock,
            listeners=[self.events.append],
        )

    # -- model -------------------------------------------------------------------------

    def _move(self, new: BreakerState) -> None:
        self.expected.append((self.state, new))
        self.state = new
        self.epoch += 1
        self.failures = 0
        self.probe_out = False
        if new is OPEN:
            self.opened_at_s = self.clock.now_s()

    def _cooled(self) -> bool:
        return self.clock.now_s() >= self.opened_at_s + self.cooldown_s

    def _observe(self) -> None:
        """What any look at the breaker does: an open, cooled breaker becomes half-open."""
        if self.state is OPEN and self._cooled():
            self._move(HALF_OPEN)

    def _take(self, index: int) -> Held:
        held = self.held.pop(index % len(self.held))
        self.spent.append(held)
        return held

    def _stale(self) -> list[Held]:
        return [h for h in self.spent if h.epoch != self.epoch]

    # -- rules -------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 4.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def try_acquire(self) -> None:
        was_open_and_warm = self.state is OPEN and not self._cooled()
        self._observe()
        permit = self.breaker.try_acquire()
        if was_open_and_warm:
            assert permit is None, "no permit while open before the cool-down"
            return
        if self.state is CLOSED:
            assert permit is not None
            assert not permit.probe
        elif self.state is HALF_OPEN and not self.probe_out:
            assert permit is not None, "half-open must hand out one probe"
            assert permit.probe
            self.probe_out = True
        else:
            assert permit is None, "only one probe at a time in half-open"
            return
        assert self.generations.setdefault(self.epoch, permit.generation) == permit.generation
        self.held.append(Held(permit, self.epoch))

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 50))
    def succeed(self, index: int) -> None:
        held = self._take(index)
        before = self.state
        self.breaker.record_success(held.permit)
        if held.epoch != self.epoch:
            return  # stale: must change nothing (checked by the invariants)
        if before is CLOSED:
            self.failures = 0
        elif before is HALF_OPEN and held.permit.probe:
            self._move(CLOSED)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 50))
    def fail(self, index: int) -> None:
        held = self._take(index)
        self.breaker.record_failure(held.permit)
        if held.epoch != self.epoch:
            return
        if self.state is CLOSED:
            self.failures += 1
            if self.failures == self.threshold:
                self._move(OPEN)
        elif self.state is HALF_OPEN and held.permit.probe:
            self._move(OPEN)  # a fresh cool-down from now

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 50))
    def release(self, index: int) -> None:
        held = self._take(index)
        self.breaker.release(held.permit)
        if held.permit.probe and held.epoch == self.epoch:
            self.probe_out = False

    @precondition(lambda self: self._stale())
    @rule(index=st.integers(0, 50), action=st.sampled_from(["success", "failure", "release"]))
    def report_stale_again(self, index: int, action: str) -> None:
        """A permit from an older generation reported (again): it must change nothing."""
        stale = self._stale()
        permit = stale[index % len(stale)].permit
        report = {
            "success": self.breaker.record_success,
            "failure": self.breaker.record_failure,
            "release": self.breaker.release,
        }[action]
        report(permit)

    @rule()
    def read_state(self) -> None:
        self._observe()
        assert self.breaker.state is self.state

    # -- invariants (none of them touches the breaker in a way that changes it) --------

    @invariant()
    def transitions_match_model(self) -> None:
        seen = [(e.old, e.new) for e in self.events]
        assert seen == self.expected, "each transition reported exactly once, in order"
        assert all(edge in VALID_EDGES for edge in seen)
        for before, after in zip(self.events, self.events[1:], strict=False):
            assert before.new is after.old
            assert before.at_s <= after.at_s
        assert all(e.breaker == "model" for e in self.events)

    @invariant()
    def retry_after_matches_model(self) -> None:
        if not hasattr(self, "breaker"):
            return
        if self.state is OPEN:
            left = max(0.0, self.opened_at_s + self.cooldown_s - self.clock.now_s())
            assert self.breaker.retry_after_s() == left
        else:
            assert self.breaker.retry_after_s() == 0.0

    @invariant()
    def at_most_one_live_probe(self) -> None:
        live = [h for h in self.held if h.permit.probe and h.epoch == self.epoch]
        assert len(live) <= 1
        assert self.probe_out == bool(live)

    @invariant()
    def generations_are_distinct_per_epoch(self) -> None:
        assert len(set(self.generations.values())) == len(self.generations)


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase


# -- plain transitions ---------------------------------------------------------------------


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown_s"):
        CircuitBreaker("x", cooldown_s=0)


def test_opens_after_exactly_threshold_consecutive_failures() -> None:
    breaker, _, events = make_breaker(threshold=3)
    for _ in range(2):
        breaker.record_failure(breaker.acquire())
    breaker.record_success(breaker.acquire())  # resets the run
    for _ in range(2):
        breaker.record_failure(breaker.acquire())
    assert breaker.state is CLOSED
    assert events == []
    breaker.record_failure(breaker.acquire())
    assert breaker.state is OPEN
    assert [(e.old, e.new) for e in events] == [(CLOSED, OPEN)]


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    breaker, clock, events = make_breaker(threshold=1, cooldown_s=10.0)
    half_open_breaker(breaker, clock)
    clock.advance(7.0)  # the probe takes a while
    probe = breaker.try_acquire()
    assert probe is not None
    assert probe.probe
    breaker.record_failure(probe)
    assert breaker.state is OPEN
    assert breaker.retry_after_s() == 10.0
    clock.advance(9.5)
    assert breaker.try_acquire() is None
    clock.advance(0.5)
    assert breaker.try_acquire() is not None
    assert [(e.old, e.new) for e in events] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
    ]
    assert events[2].at_s == clock.now_s() - 10.0


def test_a_stale_permit_cannot_close_or_reopen_the_breaker() -> None:
    breaker, clock, events = make_breaker(threshold=1, cooldown_s=10.0)
    slow = breaker.acquire()  # started while closed, finishes much later
    breaker.record_failure(breaker.acquire())
    assert breaker.state is OPEN
    breaker.record_success(slow)
    assert breaker.state is OPEN
    clock.advance(10.0)
    probe = breaker.acquire()
    breaker.record_failure(slow)
    breaker.record_success(slow)
    breaker.release(slow)
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire() is None, "the live probe still holds the slot"
    breaker.record_success(probe)
    assert breaker.state is CLOSED
    breaker.record_failure(probe)  # a second verdict from the same (now stale) probe
    assert breaker.state is CLOSED
    assert len(events) == 3


def test_a_stale_permit_neither_counts_nor_resets_failures() -> None:
    breaker, clock, _ = make_breaker(threshold=2, cooldown_s=10.0)
    stale_a, stale_b = breaker.acquire(), breaker.acquire()
    half_open_breaker(breaker, clock)
    breaker.record_success(breaker.acquire())
    assert breaker.state is CLOSED
    breaker.record_failure(stale_a)
    breaker.record_failure(breaker.acquire())
    assert breaker.state is CLOSED, "the stale failure did not count"
    breaker.record_success(stale_b)
    breaker.record_failure(breaker.acquire())
    assert breaker.state is OPEN, "the stale success did not reset the run"


# -- call() ------------------------------------------------------------------------------


async def never_returns() -> None:
    await asyncio.Event().wait()


async def test_call_returns_the_result_and_counts_a_success() -> None:
    breaker, _, _ = make_breaker(threshold=2)
    breaker.record_failure(breaker.acquire())

    async def answer() -> int:
        return 42

    assert await breaker.call(answer, timeout_s=5.0) == 42
    breaker.record_failure(breaker.acquire())
    assert breaker.state is CLOSED, "the success reset the run of failures"


async def test_call_counts_a_timeout_as_a_failure() -> None:
    breaker, _, events = make_breaker(threshold=2)
    # timeout_s=0: the deadline has already passed at the first await, so no real waiting.
    with pytest.raises(DependencyUnavailableError) as first:
        await breaker.call(never_returns, timeout_s=0)
    assert isinstance(first.value.__cause__, TimeoutError)
    assert first.value.dependency == "dep"
    assert first.value.code == "unavailable"
    assert "timed out" in first.value.detail
    assert breaker.state is CLOSED
    with pytest.raises(DependencyUnavailableError):
        await breaker.call(never_returns, timeout_s=0)
    assert breaker.state is OPEN
    assert [(e.old, e.new) for e in events] == [(CLOSED, OPEN)]


async def test_call_counts_an_error_as_a_failure() -> None:
    breaker, _, _ = make_breaker(threshold=1)

    async def broken() -> None:
        raise ConnectionError("refused")

    with pytest.raises(DependencyUnavailableError) as caught:
        await breaker.call(broken, timeout_s=5.0)
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert breaker.state is OPEN


async def test_call_while_open_raises_without_calling() -> None:
    breaker, clock, _ = make_breaker(threshold=1, cooldown_s=10.0)
    open_breaker(breaker)
    clock.advance(3.0)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(BreakerOpenError) as caught:
        await breaker.call(counted, timeout_s=5.0)
    assert caught.value.retry_after_s == 7.0
    assert caught.value.dependency == "dep"
    clock.advance(6.5)  # 0.5 s left: the hint never says less than a second
    with pytest.raises(BreakerOpenError) as caught:
        await breaker.call(counted, timeout_s=5.0)
    assert caught.value.retry_after_s == 1.0
    assert calls == 0
    clock.advance(0.5)
    await breaker.call(counted, timeout_s=5.0)
    assert calls == 1
    assert breaker.state is CLOSED


async def test_cancelling_the_probe_releases_its_slot_without_a_verdict() -> None:
    breaker, clock, events = make_breaker(threshold=1)
    half_open_breaker(breaker, clock)
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(hangs, timeout_s=60.0))
    await started.wait()
    assert breaker.try_acquire() is None, "the running call holds the probe"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is HALF_OPEN
    assert len(events) == 2, "a cancellation is neither a success nor a failure"
    probe = breaker.try_acquire()
    assert probe is not None
    assert probe.probe


async def test_cancelling_a_closed_call_is_not_a_failure() -> None:
    breaker, _, _ = make_breaker(threshold=1)
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(hangs, timeout_s=60.0))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is CLOSED


# -- concurrency -------------------------------------------------------------------------


async def test_concurrent_tasks_in_half_open_get_exactly_one_permit() -> None:
    breaker, clock, _ = make_breaker(threshold=1)
    open_breaker(breaker)
    clock.advance(breaker.cooldown_s)  # cooled, but nobody has looked yet
    go = asyncio.Event()

    async def contender() -> Permit | None:
        await go.wait()
        return breaker.try_acquire()

    tasks = [asyncio.create_task(contender()) for _ in range(100)]
    await asyncio.sleep(0)  # a yield, not a wait: every task is now parked on `go`
    go.set()
    permits = [p for p in await asyncio.gather(*tasks) if p is not None]
    assert len(permits) == 1
    assert permits[0].probe


async def test_concurrent_calls_in_half_open_run_the_dependency_once() -> None:
    breaker, clock, events = make_breaker(threshold=1)
    half_open_breaker(breaker, clock)
    running = 0
    finish = asyncio.Event()

    async def dependency() -> str:
        nonlocal running
        running += 1
        await finish.wait()
        return "ok"

    async def caller() -> str:
        try:
            return await breaker.call(dependency, timeout_s=60.0)
        except BreakerOpenError:
            return "refused"

    tasks = [asyncio.create_task(caller()) for _ in range(50)]
    for _ in range(100):  # yields, not waits: let every task reach its first suspension
        if sum(t.done() for t in tasks) == 49:
            break
        await asyncio.sleep(0)
    assert running == 1
    finish.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == 1
    assert results.count("refused") == 49
    assert breaker.state is CLOSED
    assert [(e.old, e.new) for e in events][-1] == (HALF_OPEN, CLOSED)


@pytest.fixture
def busy_gil() -> Iterator[None]:
    """Switch threads as often as the interpreter can, so a missing lock shows up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()


THREADS, ROUNDS = 8, 2000


def spin_until(condition: Callable[[], bool]) -> None:
    """Busy-wait, so every thread is runnable when a round opens (a blocked thread cannot race).
    ``sleep(0)`` only hands the GIL over; it never waits for time to pass."""
    give_up_at = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < give_up_at, "a thread stopped making progress"
        time.sleep(0)


class Rounds:
    """Threads that spin until the main thread opens a round, then all call ``play``."""

    def __init__(self, play: Callable[[], None]) -> None:
        self._play = play
        self._current = 0  # the round the threads may play; -1 stops them
        self._finished = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(THREADS)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._current = -1
        for thread in self._threads:
            thread.join(timeout=60)

    def play(self, number: int) -> None:
        self._finished = 0
        self._current = number
        spin_until(lambda: self._finished == THREADS)

    def _run(self) -> None:
        for number in range(1, ROUNDS + 1):
            spin_until(lambda n=number: self._current in (n, -1))
            if self._current == -1:
                return
            self._play()
            with self._lock:
                self._finished += 1


@pytest.mark.usefixtures("busy_gil")
def test_threads_racing_in_half_open_get_exactly_one_probe() -> None:
    """Round after round, 8 spinning threads hammer try_acquire on a breaker that is open and
    has just cooled, so they race the lazy move to half-open and then the probe slot: exactly
    one probe and one transition per round. Without the breaker's lock this fails."""
    breaker, clock, events = make_breaker(threshold=1)
    open_breaker(breaker)
    granted: list[Permit] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(20):
            permit = breaker.try_acquire()
            if permit is not None:
                with lock:
                    granted.append(permit)

    per_round: list[int] = []
    with Rounds(hammer) as rounds:
        for number in range(1, ROUNDS + 1):
            clock.advance(breaker.cooldown_s)
            granted.clear()
            rounds.play(number)
            per_round.append(len(granted))
            assert breaker.state is HALF_OPEN
            if granted:
                breaker.record_failure(granted[0])  # the probe fails: open again
    assert per_round == [1] * ROUNDS
    assert all(permit.probe for permit in granted)
    edges = [(e.old, e.new) for e in events]
    assert edges == [(CLOSED, OPEN)] + [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)] * ROUNDS


@pytest.mark.usefixtures("busy_gil")
def test_threads_failing_together_open_the_breaker_once() -> None:
    breaker, _, events = make_breaker(threshold=500)
    permits = [breaker.acquire() for _ in range(THREADS * 200)]
    barrier = threading.Barrier(THREADS)

    def failer(chunk: list[Permit]) -> Callable[[], None]:
        def fail() -> None:
            barrier.wait(timeout=30)
            for permit in chunk:
                breaker.record_failure(permit)

        return fail

    run_threads([failer(permits[i::THREADS]) for i in range(THREADS)])
    assert breaker.state is OPEN
    assert [(e.old, e.new) for e in events] == [(CLOSED, OPEN)]
