"""Two versions of Denis side by side in one run: ``POST /chat`` throughput and CPU per request.

``bench_pipeline.py`` measures one version against the bare route. To tell whether a change
made Denis cheaper, on a shared and noisy machine, both versions have to run at the same time:
this starts the bare route and, for each source tree, Denis (``harness.FoundationProcess``:
``denis serve`` with the sync plane's ``BasicResponder``) in memory and on one shared
``redis-server``, all as real uvicorn processes, and interleaves their load rounds (16
connections, as in ``bench_pipeline.py`` (b2)), plus 300 sequential requests per round.

Run (the "before" tree from git, the "after" tree this checkout)::

    git worktree add /tmp/denis-before <commit>
    .venv/bin/python benchmarks/compare_versions.py /tmp/denis-before/src src [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    HIGH_LIMITS,
    BareProcess,
    FoundationProcess,
    RedisServer,
    chat_request,
    load_rounds,
    md_table,
    percentile,
    run_async,
    run_load,
    started,
    warm_up,
    workspace,
)

LOAD_CONCURRENCY = 16
LOAD_TOTAL = 3000  # per target per round
SEQ_TOTAL = 300  # sequential requests per target per round
WARMUP = 500
BARE = "bare FastAPI"


@dataclass
class Rounds:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    sequential_s: list[float] = field(default_factory=list)


async def _measure(
    targets: dict[str, BareProcess | FoundationProcess], token: str, rounds: int
) -> dict[str, Rounds]:
    requests = {name: chat_request(t.port, token) for name, t in targets.items()}
    await warm_up(targets, requests, WARMUP)
    out = {name: Rounds() for name in targets}
    samples = load_rounds(targets, requests, rounds, concurrency=LOAD_CONCURRENCY, total=LOAD_TOTAL)
    async for name, sample in samples:
        out[name].rps.append(sample.result.throughput_rps)
        out[name].cpu_us.append(sample.cpu_us)
        port = targets[name].port
        sequential = await run_load(port, requests[name], concurrency=1, total=SEQ_TOTAL)
        out[name].sequential_s.extend(sequential.latencies_s)
    return out


def _table(out: dict[str, Rounds]) -> str:
    bare = out[BARE]
    rows = []
    for name, runs in out.items():
        ratios = [rps / base for rps, base in zip(runs.rps, bare.rps, strict=True)]
        rows.append(
            [
                name,
                f"{statistics.median(runs.rps):,.0f}",
                f"{statistics.median(ratios):.2f}",
                f"{min(ratios):.2f} to {max(ratios):.2f}",
                f"{statistics.median(runs.cpu_us):.0f}",
                f"{percentile(runs.sequential_s, 50) * 1000:.2f}",
                f"{percentile(runs.sequential_s, 99) * 1000:.2f}",
            ]
        )
    header = [
        "target",
        "req/s",
        "vs bare",
        "vs bare, range",
        "server CPU us/req",
        "sequential p50 ms",
        "sequential p99 ms",
    ]
    return md_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Two versions of Denis side by side in one run.")
    parser.add_argument("before", type=Path, help="the 'src' directory of the earlier version")
    parser.add_argument("after", type=Path, help="the 'src' directory of the later version")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    versions = {"before": args.before.resolve(), "after": args.after.resolve()}
    with workspace("denis-compare-") as (work, data_dir, token):
        redis = RedisServer(work / "redis")
        targets: dict[str, BareProcess | FoundationProcess] = {BARE: BareProcess(work / "bare.log")}
        with started(redis):
            redis.start()
            for label, src in versions.items():
                env = {**HIGH_LIMITS, "PYTHONPATH": str(src)}
                targets[f"Denis {label}, in memory"] = FoundationProcess(data_dir, env)
                targets[f"Denis {label}, Redis"] = FoundationProcess(
                    data_dir, {**env, "DENIS_REDIS_URL": redis.url}
                )
            with started(*targets.values()):
                for target in targets.values():
                    target.start()
                out = run_async(_measure(targets, token, args.rounds))
    print(_table(out))


if __name__ == "__main__":
    main()
