"""Concurrent load with fault steps in the middle, for the chaos suites.

``under_load`` keeps ``workers`` loops sending requests back to back, each on its own HTTP
client, while it waits and runs each fault step; what every request looked like to its client
comes back as a ``LoadRun`` with the ``Mark`` of each fault, on the same monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import httpx
import pytest


class Timed(Protocol):
    """A request's outcome, stamped by the client's monotonic clock."""

    @property
    def started_s(self) -> float: ...

    @property
    def ended_s(self) -> float: ...


OutcomeT = TypeVar("OutcomeT", bound=Timed)

Step = tuple[float, Callable[[], object]]
"""Seconds to wait, then a (blocking) fault action to run in a thread; its result is ignored."""


@dataclass(frozen=True, slots=True)
class Mark:
    """When a fault action ran, by the client's monotonic clock."""

    started_s: float
    ended_s: float


@dataclass(frozen=True, slots=True)
class LoadRun(Generic[OutcomeT]):
    outcomes: list[OutcomeT]
    marks: list[Mark]

    def finished_before(self, at_s: float) -> list[OutcomeT]:
        return [o for o in self.outcomes if o.ended_s < at_s]

    def started_between(self, from_s: float, to_s: float = float("inf")) -> list[OutcomeT]:
        return [o for o in self.outcomes if from_s < o.started_s < to_s]


async def under_load(
    connect: Callable[[int, httpx.AsyncClient], Callable[[int], Awaitable[OutcomeT]]],
    steps: Sequence[Step],
    *,
    workers: int,
    client_timeout_s: float,
    tail_s: float,
) -> LoadRun[OutcomeT]:
    """Run ``workers`` loops; loop ``w`` gets ``send = connect(w, its_client)`` and awaits
    ``send(n)`` back to back for ``n = w, w + 1, ...`` (so loops start spread over whatever
    ``n`` selects). Meanwhile wait and run each fault step, then keep the load on for
    ``tail_s`` more seconds.

    Each loop has its own HTTP client: one client shared by all loops queues requests in its
    connection pool (stalls of up to 2 s were seen with two servers and no fault at all), which
    would be measured as Denis's latency.
    """
    stop = asyncio.Event()
    outcomes: list[OutcomeT] = []

    async def loop(index: int, client: httpx.AsyncClient) -> None:
        send = connect(index, client)
        sent = index
        while not stop.is_set():
            outcomes.append(await send(sent))
            sent += 1

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(timeout=client_timeout_s))
            for _ in range(workers)
        ]
        tasks = [asyncio.create_task(loop(i, c)) for i, c in enumerate(clients)]
        marks = []
        try:
            for delay_s, action in steps:
                await asyncio.sleep(delay_s)
                started_s = time.monotonic()
                await asyncio.to_thread(action)
                marks.append(Mark(started_s, time.monotonic()))
            await asyncio.sleep(tail_s)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    return LoadRun(outcomes, marks)


def record(request: pytest.FixtureRequest, name: str, value: object) -> None:
    """Keep a measurement with the test's report (``user_properties``, e.g. in JUnit XML)."""
    request.node.user_properties.append((name, value))
