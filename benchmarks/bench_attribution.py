"""Where a ``POST /chat`` turn's CPU goes: the whole pipeline against itself with one step
skipped at a time, and against a bare FastAPI route, in the same run.

Issue 2 asks for >= 60 % of the bare route's throughput (section 1 of ``RESULTS.md``). This
benchmark says what each step of a turn costs, so that the distance to that target can be read
step by step: each "without X" server is ``foundation_server.py`` with ``DENIS_BENCH_SKIP=X``
(the step replaced with a no-op, attribution only), and "saved" is its CPU per request less
than the whole turn's. "without every step" skips them all at once: what is left is the HTTP
edge (middleware, security headers aside), bearer auth, reading and validating the body,
the hop check and the ``BasicResponder``.

Every server is a real process on its own port, Denis in memory (no Redis) with its graph on
disk in a directory of its own (what ``make run`` uses). The load is 16 keep-alive connections,
``ROUNDS`` rounds of ``LOAD_TOTAL`` requests per server, the servers in a rotating order so
drift hits all alike; the table gives the medians over the rounds. CPU per request is read
from ``/proc`` for the whole process and for its main thread: the event loop runs there, so
its CPU per request bounds the req/s one process can serve. The graph writer's engine
threads run beside it, and on this machine (two vCPUs that share one core's throughput, see
``RESULTS.md``) they slow it down too.

Run: ``.venv/bin/python benchmarks/run_all.py attribution`` (about 2 minutes).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from foundation_server import SKIPPABLE
from harness import (
    HIGH_LIMITS,
    BareProcess,
    FoundationProcess,
    chat_request,
    load_rounds,
    md_table,
    run_async,
    started,
    warm_up,
    workspace,
)

LOAD_CONCURRENCY = 16
ROUNDS = 3
LOAD_TOTAL = 3000
TARGET_THROUGHPUT = 0.60
BARE = "bare FastAPI"
WHOLE = "Denis, whole turn"
NOTHING = "Denis without every step below"


@dataclass
class _Rounds:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    main_us: list[float] = field(default_factory=list)

    def median(self) -> tuple[float, float, float]:
        return (
            statistics.median(self.rps),
            statistics.median(self.cpu_us),
            statistics.median(self.main_us),
        )


async def _measure(
    targets: dict[str, BareProcess | FoundationProcess], token: str
) -> dict[str, _Rounds]:
    requests = {name: chat_request(t.port, token) for name, t in targets.items()}
    await warm_up(targets, requests)
    rounds = {name: _Rounds() for name in targets}
    samples = load_rounds(targets, requests, ROUNDS, concurrency=LOAD_CONCURRENCY, total=LOAD_TOTAL)
    async for name, sample in samples:
        rounds[name].rps.append(sample.result.throughput_rps)
        rounds[name].cpu_us.append(sample.cpu_us)
        rounds[name].main_us.append(sample.main_us)
    return rounds


def run() -> str:
    with workspace() as (work, data_dir, token):

        def denis(name: str, skip: str) -> FoundationProcess:
            graph = work / "graph" / name / "db"
            env = {**HIGH_LIMITS, "DENIS_GRAPH_EMBEDDED_PATH": str(graph)}
            return FoundationProcess(data_dir, {**env, "DENIS_BENCH_SKIP": skip})

        targets: dict[str, BareProcess | FoundationProcess] = {
            BARE: BareProcess(work / "bare.log"),
            WHOLE: denis("whole", ""),
            NOTHING: denis("nothing", ",".join(SKIPPABLE)),
        }
        for step in SKIPPABLE:
            targets[f"without {step}"] = denis(step, step)
        with started(*targets.values()):
            for target in targets.values():
                target.start()
            rounds = run_async(_measure(targets, token))
    bare_rps, _, bare_main = rounds[BARE].median()
    _, whole_cpu, whole_main = rounds[WHOLE].median()
    rows = []
    for name, measured in rounds.items():
        rps, cpu, main = measured.median()
        saved = "-" if name in (BARE, WHOLE) else f"{whole_cpu - cpu:.0f} / {whole_main - main:.0f}"
        rows.append(
            [name, f"{rps:,.0f}", f"{rps / bare_rps:.2f}", f"{cpu:.0f}", f"{main:.0f}", saved]
        )
    table = md_table(
        [
            "server",
            "req/s",
            "vs bare",
            "CPU µs/req",
            "main thread µs/req",
            "saved vs whole turn (CPU / main)",
        ],
        rows,
    )
    needed = bare_main / TARGET_THROUGHPUT
    return (
        f"16 connections, {ROUNDS} rounds x {LOAD_TOTAL} requests per server, medians.\n\n"
        f"{table}\n\n"
        f"Reading: {TARGET_THROUGHPUT:.0%} of the bare route's req/s means at most about "
        f"{needed:.0f} µs of main-thread CPU per turn (the bare route's {bare_main:.0f} / "
        f"{TARGET_THROUGHPUT}); the whole turn takes {whole_main:.0f}."
    )


if __name__ == "__main__":
    print(run())
