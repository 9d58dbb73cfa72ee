"""A turn's Redis work alone: what the sync plane's admission (two rate limits and the budget
reservation) and settle cost on a real ``redis-server``, against the same steps on the
in-memory stores, same run.

Each "turn" here is only those steps, through the classes the pipeline uses (``AdmissionGate``
and ``BudgetGate`` over one ``RedisLink``, ``CommandBatcher`` underneath): one awaited command
(the admission script) and one not awaited (the settle). Run by 1 and by 16 concurrent tasks on
uvloop. The figure is this process's CPU per turn (``time.process_time``), so
``redis-server``'s own CPU is not in it; "mean batch" is commands per write.

Run: ``.venv/bin/python benchmarks/bench_redis_turn.py`` (or ``run_all.py redis_turn``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from denis.resilience import CircuitBreaker, Deadline, MonotonicClock, Signals
from denis.resilience.metrics import Metrics
from denis.sync_plane.admission import AdmissionGate, RateRules
from denis.sync_plane.budget import BudgetGate, MemoryBudgetStore
from denis.sync_plane.limiter import MemoryRateLimiter, RateRule
from denis.sync_plane.redis_link import RedisLink
from harness import RedisServer, md_table, rotated, run_async, started, workspace

TURNS = 10_000
ROUNDS = 5
CONCURRENCY = (1, 16)
USER = RateRule.parse("user", "1000000000/minute")
CLIENT = RateRule.parse("client", "1000000000/minute")

Turn = Callable[[Deadline], Awaitable[None]]

MEMORY = "in memory (the fallback stores)"
REDIS = "Redis, as Denis runs (admission script awaited, settle not)"


def _link(url: str) -> RedisLink:
    return RedisLink(
        url,
        timeout_s=0.1,
        breaker=CircuitBreaker("redis", failure_threshold=3, cooldown_s=5),
        signals=Signals(Metrics(CollectorRegistry())),
    )


def _steps(link: RedisLink | None) -> Turn:
    clock = MonotonicClock()
    budget = BudgetGate(
        memory=MemoryBudgetStore(max_keys=100_000, clock=clock),
        link=link,
        tokens_per_day=10**15,
        reply_reserve_tokens=50,
        signals=Signals(Metrics(CollectorRegistry())),
    )
    admission = AdmissionGate(
        rules=RateRules(user=USER, client=CLIENT),
        limiter=MemoryRateLimiter(max_keys=100_000, clock=clock),
        budget=budget,
        link=link,
    )

    async def turn(deadline: Deadline) -> None:
        reservation, _ = await admission.admit("bench", "127.0.0.1", 5, deadline)
        budget.settle(reservation, 12)

    return turn


async def _cpu_per_turn(turn: Turn, concurrency: int, turns: int) -> float:
    clock = MonotonicClock()
    left = [turns]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await turn(Deadline.start(clock, 15))

    started_s = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started_s) / turns * 1e6


async def _measure(url: str) -> dict[tuple[str, int], tuple[list[float], float]]:
    """Per concurrency, fresh links (so each batcher's counts are of that concurrency, warm-up
    included): every row's samples and its mean batch (0 in memory)."""
    results: dict[tuple[str, int], tuple[list[float], float]] = {}
    for concurrency in CONCURRENCY:
        link = _link(url)
        rows = {MEMORY: (_steps(None), None), REDIS: (_steps(link), link.batcher)}
        try:
            for turn, _ in rows.values():
                await _cpu_per_turn(turn, concurrency, 2_000)  # scripts loaded, pools warm
            samples: dict[str, list[float]] = {name: [] for name in rows}
            for round_no in range(ROUNDS):
                for name in rotated(list(rows), round_no):
                    samples[name].append(await _cpu_per_turn(rows[name][0], concurrency, TURNS))
        finally:
            await link.aclose()
        for name, (_, batcher) in rows.items():
            mean_batch = batcher.commands / batcher.batches if batcher else 0.0
            results[name, concurrency] = (samples[name], mean_batch)
    return results


def run() -> str:
    print("redis turn: in process, real redis-server ...", flush=True)
    with workspace() as (work, _data, _token):
        redis = RedisServer(work / "redis")
        with started(redis):
            redis.start()
            results = run_async(_measure(redis.url))
    rows = []
    for concurrency in CONCURRENCY:
        memory = statistics.median(results[MEMORY, concurrency][0])
        for name in (MEMORY, REDIS):
            samples, mean_batch = results[name, concurrency]
            median = statistics.median(samples)
            rows.append(
                [
                    str(concurrency),
                    name,
                    f"{median:.1f}",
                    f"{min(samples):.1f} to {max(samples):.1f}",
                    "-" if name == MEMORY else f"+{median - memory:.1f}",
                    f"{mean_batch:.1f}" if mean_batch else "-",
                ]
            )
    table = md_table(
        [
            "concurrent turns",
            "steps run on",
            "CPU µs/turn (median)",
            "range",
            "added vs memory",
            "mean batch",
        ],
        rows,
    )
    return (
        f"{ROUNDS} rounds x {TURNS:,} turns per row, rows interleaved; this process's CPU "
        "only (redis-server's is not in it); no target (section 1 holds the pipeline's).\n\n"
        + table
    )


if __name__ == "__main__":
    print(run())
