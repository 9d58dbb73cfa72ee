"""p99 of ``POST /chat`` with Redis hung (SIGSTOPped) after the breaker opened, against healthy.

Real Denis processes on real ``redis-server``s; the Redis breaker's cool-down is 300 s, so once
open it stays open for the whole measurement (no half-open probe waits on the hung Redis).
Each process is ``denis serve`` with the sync plane's ``BasicResponder``
(``harness.FoundationProcess``), the pipeline issue 2 measures, as in section 1: the
assistant's intents, tools and graph routes (section 6) are not what this measures.

- A and B use Redis R, which gets SIGSTOPped (it accepts connections and never answers).
- H uses Redis R', which stays healthy: a same-time healthy reference. Measurement blocks
  alternate between A and H, so noise on a shared machine hits both alike.

Phases, each at 1 connection and at 16:

1. healthy: A and H interleaved (A/H close to 1 shows the two are alike).
2. SIGSTOP R. Detection on A with one connection and on B with 16: from the first request
   after the hang until ``/status`` shows the breaker open, and the worst single request
   meanwhile. A request can wait on at most ``threshold`` (3) Redis calls of
   ``DENIS_REDIS_TIMEOUT_S`` (0.1 s) each.
3. hung, breaker open: A and H interleaved again; every reply from A must say it ran degraded.

Reported: A's hung p99 against H's p99 in the same phase (the verdict) and against A's own
healthy p99 before the hang (drift between phases shows up here).
Target (issue 2): hung-after-open p99 <= 1.2 x healthy p99.

Run: ``.venv/bin/python benchmarks/bench_redis_hung.py`` (or ``make bench`` for all).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from harness import (
    HIGH_LIMITS,
    DenisProcess,
    FoundationProcess,
    LoadResult,
    RedisServer,
    chat_request,
    md_table,
    ms,
    run_async,
    run_load,
    started,
    workspace,
)

COOLDOWN_S = 300
REDIS_TIMEOUT_S = 0.1
THRESHOLD = 3
# (connections, rounds, requests per round per process)
LOADS = ((1, 5, 400), (16, 12, 1500))  # at 16, 4 rounds let one burst of tail set the p99
DETECT_S = 1.0  # load kept up after the hang while detection is watched
TARGET_RATIO = 1.2


async def _interleaved(
    targets: dict[str, DenisProcess], token: str
) -> dict[tuple[str, int], LoadResult]:
    """Per (process name, connections): all its requests, in rounds alternating the processes."""
    results: dict[tuple[str, int], LoadResult] = {}
    names = list(targets)
    for concurrency, rounds, per_round in LOADS:
        for round_no in range(rounds):
            for name in names[round_no % 2 :] + names[: round_no % 2]:
                denis = targets[name]
                got = await run_load(
                    denis.port,
                    chat_request(denis.port, token),
                    concurrency=concurrency,
                    total=per_round,
                )
                if got.errors:
                    raise RuntimeError(f"{name}: {got.errors} non-200 answers")
                merged = results.setdefault((name, concurrency), LoadResult())
                merged.latencies_s.extend(got.latencies_s)
                merged.degraded.extend(got.degraded)
                merged.statuses.extend(got.statuses)
    return results


async def _breaker_open_at(denis: DenisProcess, token: str, give_up_s: float) -> float | None:
    """perf_counter time at which ``/status`` first shows the Redis breaker open."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=denis.url, headers=headers, timeout=5) as client:
        stop_at = time.perf_counter() + give_up_s
        while time.perf_counter() < stop_at:
            status = (await client.get("/status")).json()
            if status["breakers"]["redis"] == "open":
                return time.perf_counter()
            await asyncio.sleep(0.005)
    return None


async def _detect(denis: DenisProcess, token: str, concurrency: int) -> list[str]:
    request = chat_request(denis.port, token)
    watcher = asyncio.create_task(_breaker_open_at(denis, token, DETECT_S + 5))
    result = await run_load(
        denis.port, request, concurrency=concurrency, total=10**9, duration_s=DETECT_S
    )
    opened_at = await watcher
    first = min(result.starts_s)
    worst = max(result.latencies_s)
    slow = sum(1 for x in result.latencies_s if x >= REDIS_TIMEOUT_S / 2)
    return [
        f"{concurrency}",
        "never" if opened_at is None else ms(opened_at - first),
        ms(worst),
        f"{slow} of {result.count}",
        str(result.errors),
    ]


async def _scenario(
    redis: RedisServer, processes: dict[str, DenisProcess], token: str
) -> tuple[dict[tuple[str, int], LoadResult], list[list[str]], dict[tuple[str, int], LoadResult]]:
    for denis in processes.values():  # warm-up: pools, Lua scripts
        await run_load(denis.port, chat_request(denis.port, token), concurrency=4, total=500)
    pair = {"A": processes["A"], "H": processes["H"]}
    healthy = await _interleaved(pair, token)
    redis.pause()
    detection = [
        await _detect(processes["A"], token, 1),
        await _detect(processes["B"], token, 16),
    ]
    hung = await _interleaved(pair, token)
    for concurrency, _, _ in LOADS:
        if not all(hung["A", concurrency].degraded):
            raise RuntimeError(f"hung phase at {concurrency}: some replies did not run degraded")
        if any(hung["H", concurrency].degraded):
            raise RuntimeError("the healthy reference ran degraded")
    return healthy, detection, hung


def _rows(
    healthy: dict[tuple[str, int], LoadResult], hung: dict[tuple[str, int], LoadResult]
) -> tuple[list[list[str]], list[bool]]:
    rows, verdicts = [], []
    for concurrency, _, _ in LOADS:
        a_before, h_before = healthy["A", concurrency], healthy["H", concurrency]
        a_hung, h_same = hung["A", concurrency], hung["H", concurrency]
        same_time = a_hung.p(99) / h_same.p(99)
        before_after = a_hung.p(99) / a_before.p(99)
        ok = same_time <= TARGET_RATIO
        verdicts.append(ok)
        rows.append(
            [
                str(concurrency),
                str(a_hung.count),
                f"{ms(a_before.p(99))} / {ms(h_before.p(99))}",
                f"{ms(a_hung.p(50))} / {ms(h_same.p(50))}",
                f"{ms(a_hung.p(99))} / {ms(h_same.p(99))}",
                f"{same_time:.2f}",
                f"{before_after:.2f}",
                "meets" if ok else "MISSES",
            ]
        )
    return rows, verdicts


def run() -> str:
    with workspace() as (work, data_dir, token):
        hung_redis, healthy_redis = RedisServer(work / "r"), RedisServer(work / "r-healthy")

        def env(redis: RedisServer) -> dict[str, str]:
            return {
                **HIGH_LIMITS,
                "DENIS_REDIS_URL": redis.url,
                "DENIS_REDIS_TIMEOUT_S": str(REDIS_TIMEOUT_S),
                "DENIS_REDIS_BREAKER_THRESHOLD": str(THRESHOLD),
                "DENIS_REDIS_BREAKER_COOLDOWN_S": str(COOLDOWN_S),
            }

        processes = {
            "A": FoundationProcess(data_dir, env(hung_redis)),
            "B": FoundationProcess(data_dir, env(hung_redis)),
            "H": FoundationProcess(data_dir, env(healthy_redis)),
        }
        with started(hung_redis, healthy_redis, *processes.values()):
            hung_redis.start()
            healthy_redis.start()
            for denis in processes.values():
                denis.start()
            print("redis hung: healthy, SIGSTOP, detection, hung ...", flush=True)
            healthy, detection, hung = run_async(_scenario(hung_redis, processes, token))

    rows, verdicts = _rows(healthy, hung)
    bound_ms = THRESHOLD * REDIS_TIMEOUT_S * 1000
    return "\n\n".join(
        [
            (
                f"Settings: DENIS_REDIS_TIMEOUT_S={REDIS_TIMEOUT_S}, "
                f"DENIS_REDIS_BREAKER_THRESHOLD={THRESHOLD}, "
                f"DENIS_REDIS_BREAKER_COOLDOWN_S={COOLDOWN_S}. A: Redis hung in phase 3; "
                "H: healthy Redis throughout, measured in alternating blocks with A."
            ),
            "### p99 with Redis hung after the breaker opened vs healthy (ms)",
            md_table(
                [
                    "connections",
                    "n per process",
                    "phase 1 p99 A / H",
                    "phase 3 p50 A hung / H",
                    "phase 3 p99 A hung / H",
                    "hung/healthy p99, same time",
                    "hung/healthy p99, A before/after",
                    "verdict",
                ],
                rows,
            ),
            f"### Detection: from the first request after SIGSTOP ({DETECT_S:g} s of load)",
            md_table(
                [
                    "connections",
                    "breaker open after ms",
                    "worst request ms",
                    f"requests >= {ms(REDIS_TIMEOUT_S / 2)} ms",
                    "non-200",
                ],
                detection,
            ),
            (
                f"Verdict: hung-after-open p99 <= {TARGET_RATIO}x healthy p99 (same time): "
                f"{'met' if all(verdicts) else 'MISSED'}. Expected bound on the worst request "
                f"during detection: about {bound_ms:.0f} ms (threshold x timeout)."
            ),
        ]
    )


if __name__ == "__main__":
    print(run())
