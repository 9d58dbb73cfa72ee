"""Overhead of Denis's whole ``POST /chat`` pipeline against a bare FastAPI route, same run.

Denis runs everything a real turn runs: trace middleware, hop check, bearer auth, body
parsing, two rate-limit checks, budget reserve + settle, the injection gate and the
``BasicResponder``. The baseline is ``harness.make_bare_app``: a FastAPI route that reads the
same JSON body and answers a reply of the same shape. Both get the same request bytes.

(a) In process: ``httpx.AsyncClient`` over ``httpx.ASGITransport`` (lifespans entered by hand,
    since the transport does not run them), sequential, the targets interleaved in blocks so
    that drift on a noisy machine hits all of them alike. Added ms = Denis - bare, per percentile.
(b) Real processes: ``denis serve`` (``foundation_server.py``) and the bare app under
    uvicorn, the raw-socket load generator in this process: sequential latency, then
    throughput at 16 connections, with each server's CPU time per request (from ``/proc``): a
    steadier view of its cost than req/s, since the client, the servers and Redis share the
    machine's CPUs.

Denis runs in memory (no Redis) and on a real ``redis-server``, with the sync plane's
``BasicResponder`` (``harness.FoundationProcess``): issue 2's pipeline. The assistant that
``create_app`` answers with by default has its own benchmark (``bench_assistant.py``).
Targets (issue 2): <= 1 ms added at p50, <= 3 ms at p99, >= 60 % of the bare throughput.

Run: ``.venv/bin/python benchmarks/bench_pipeline.py`` (or ``make bench`` for all).
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from denis.app import create_app
from denis.resilience.logs import configure_logging
from denis.settings import Settings
from denis.sync_plane import BasicResponder
from harness import (
    CHAT_TEXT,
    HIGH_LIMITS,
    BareProcess,
    FoundationProcess,
    LoadSample,
    RedisServer,
    chat_request,
    load_rounds,
    make_bare_app,
    md_table,
    ms,
    percentile,
    rotated,
    run_async,
    started,
    warm_up,
    workspace,
)

INPROC_WARMUP = 300
INPROC_ROUNDS = 20
INPROC_BLOCK = 150  # requests per target per round: 3,000 per target
SEQ_ROUNDS = 5
SEQ_BLOCK = 400  # 2,000 sequential requests per target over real sockets
LOAD_CONCURRENCY = 16
LOAD_ROUNDS = 7  # the verdict is the median of the rounds' paired ratios: 3 moved it by ±0.04
LOAD_TOTAL = 3000  # per target per round: 21,000 per target
TARGET_P50_MS = 1.0
TARGET_P99_MS = 3.0
TARGET_THROUGHPUT = 0.60

BARE = "bare FastAPI"
MEM = "Denis, in memory"
REDIS = "Denis, Redis"
# Attribution only, (b) only: the same in-memory Denis, its DecisionTraces dropped by the
# recorder instead of written to the graph (``foundation_server.py``). Not a result: every
# real turn writes its trace. The difference to MEM is what the trace writer costs.
MEM_NO_WRITES = "(reference) Denis, in memory, traces not written"


def _graph_path(data_dir: Path, name: str) -> str:
    """Each Denis its own embedded graph on disk (what ``make run`` uses): a second process
    cannot open a directory another one holds (it would run in legacy mode), and two apps in
    one process would share one database through two handles."""
    return str(data_dir.parent / "graph" / name / "db")


def _settings(data_dir: Path, redis_url: str | None) -> Settings:
    return Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        graph_embedded_path=_graph_path(data_dir, f"in-process-{redis_url is not None}"),
        rate_limit_user=HIGH_LIMITS["DENIS_RATE_LIMIT_USER"],
        rate_limit_client=HIGH_LIMITS["DENIS_RATE_LIMIT_CLIENT"],
        budget_tokens_per_day=int(HIGH_LIMITS["DENIS_BUDGET_TOKENS_PER_DAY"]),
    )


async def _in_process(data_dir: Path, token: str, redis_url: str) -> dict[str, list[float]]:
    apps = {
        BARE: make_bare_app(),
        MEM: create_app(
            _settings(data_dir, None), responder=BasicResponder(), registry=CollectorRegistry()
        ),
        REDIS: create_app(
            _settings(data_dir, redis_url), responder=BasicResponder(), registry=CollectorRegistry()
        ),
    }
    body = httpx.Request("POST", "http://x", json={"text": CHAT_TEXT}).read()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: dict[str, list[float]] = {name: [] for name in apps}
    async with AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
                )
            )

        async def block(name: str, count: int, out: list[float] | None) -> None:
            client = clients[name]
            for _ in range(count):
                began = time.perf_counter()
                response = await client.post("/chat", content=body, headers=headers)
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text}")
                if out is not None:
                    out.append(elapsed)

        for name in apps:
            await block(name, INPROC_WARMUP, None)
        for round_no in range(INPROC_ROUNDS):
            for name in rotated(list(apps), round_no):
                await block(name, INPROC_BLOCK, latencies[name])
    return latencies


def _verdict(name: str, ok: bool) -> str:  # noqa: FBT001 - a verdict is a bool
    if name == MEM_NO_WRITES:
        return "reference"
    return "meets" if ok else "MISSES"


def _latency_rows(
    latencies: dict[str, list[float]],
) -> tuple[list[list[str]], dict[str, bool]]:
    bare = latencies[BARE]
    rows: list[list[str]] = []
    verdicts: dict[str, bool] = {}
    for name, values in latencies.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        if name == BARE:
            rows.append([name, str(len(values)), ms(p50), ms(p99), "-", "-", "baseline"])
            continue
        add50, add99 = p50 - percentile(bare, 50), p99 - percentile(bare, 99)
        ok = add50 * 1000 <= TARGET_P50_MS and add99 * 1000 <= TARGET_P99_MS
        verdicts[name] = ok
        rows.append(
            [
                name,
                str(len(values)),
                ms(p50),
                ms(p99),
                f"{add50 * 1000:+.2f}",
                f"{add99 * 1000:+.2f}",
                _verdict(name, ok),
            ]
        )
    return rows, verdicts


async def _over_sockets(
    targets: dict[str, BareProcess | FoundationProcess], token: str
) -> tuple[dict[str, list[float]], dict[str, list[LoadSample]]]:
    requests = {name: chat_request(t.port, token) for name, t in targets.items()}
    await warm_up(targets, requests)
    sequential: dict[str, list[float]] = {name: [] for name in targets}
    async for name, sample in load_rounds(
        targets, requests, SEQ_ROUNDS, concurrency=1, total=SEQ_BLOCK
    ):
        sequential[name].extend(sample.result.latencies_s)
    loaded: dict[str, list[LoadSample]] = {name: [] for name in targets}
    async for name, sample in load_rounds(
        targets, requests, LOAD_ROUNDS, concurrency=LOAD_CONCURRENCY, total=LOAD_TOTAL
    ):
        loaded[name].append(sample)
    return sequential, loaded


def _throughput_rows(
    loaded: dict[str, list[LoadSample]],
) -> tuple[list[list[str]], dict[str, bool]]:
    rows: list[list[str]] = []
    verdicts: dict[str, bool] = {}
    bare_rounds = loaded[BARE]
    for name, runs in loaded.items():
        rps = statistics.median(r.result.throughput_rps for r in runs)
        p50 = statistics.median(r.result.p(50) for r in runs)
        p99 = statistics.median(r.result.p(99) for r in runs)
        cpu_us = statistics.median(r.cpu_us for r in runs)
        if name == BARE:
            ratio_text, verdict = "1.00", "baseline"
        else:
            ratio = statistics.median(
                r.result.throughput_rps / b.result.throughput_rps
                for r, b in zip(runs, bare_rounds, strict=True)
            )
            ok = ratio >= TARGET_THROUGHPUT
            verdicts[name] = ok
            ratio_text, verdict = f"{ratio:.2f}", _verdict(name, ok)
        rows.append([name, f"{rps:,.0f}", ratio_text, ms(p50), ms(p99), f"{cpu_us:.0f}", verdict])
    return rows, verdicts


def run() -> str:
    configure_logging("INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the client's per-request log line
    with workspace() as (work, data_dir, token):
        redis = RedisServer(work / "redis")
        bare = BareProcess(work / "bare.log")

        def denis(name: str, env: dict[str, str]) -> FoundationProcess:
            graph = {"DENIS_GRAPH_EMBEDDED_PATH": _graph_path(data_dir, name)}
            return FoundationProcess(data_dir, {**HIGH_LIMITS, **graph, **env})

        denis_mem = denis("memory", {})
        denis_redis = denis("redis", {"DENIS_REDIS_URL": redis.url})
        denis_no_writes = denis("no-writes", {"DENIS_BENCH_SKIP": "traces"})
        with started(redis, bare, denis_mem, denis_redis, denis_no_writes):
            redis.start()
            print("pipeline: in-process (ASGITransport) ...", flush=True)
            inproc = run_async(_in_process(data_dir, token, redis.url))
            print("pipeline: real uvicorn processes ...", flush=True)
            bare.start()
            denis_mem.start()
            denis_redis.start()
            denis_no_writes.start()
            targets: dict[str, BareProcess | FoundationProcess] = {
                BARE: bare,
                MEM: denis_mem,
                REDIS: denis_redis,
                MEM_NO_WRITES: denis_no_writes,
            }
            sequential, loaded = run_async(_over_sockets(targets, token))

    inproc_rows, inproc_ok = _latency_rows(inproc)
    seq_rows, seq_ok = _latency_rows(sequential)
    load_rows, load_ok = _throughput_rows(loaded)
    lat_header = ["target", "n", "p50 ms", "p99 ms", "added p50", "added p99", "verdict"]
    verdicts = []
    for name in (MEM, REDIS):
        latency_misses = [part for part, ok in (("a", inproc_ok), ("b1", seq_ok)) if not ok[name]]
        latency = f"MISSED in ({', '.join(latency_misses)})" if latency_misses else "met"
        throughput = "met" if load_ok[name] else "MISSED"
        verdicts.append(f"{name}: latency {latency}, throughput {throughput}")
    return "\n\n".join(
        [
            "### (a) In process, sequential (httpx.ASGITransport, lifespans entered)",
            md_table(lat_header, inproc_rows),
            "### (b1) Real uvicorn processes, sequential (1 keep-alive connection)",
            md_table(lat_header, seq_rows),
            (
                f"### (b2) Real uvicorn processes, {LOAD_CONCURRENCY} concurrent connections, "
                f"{LOAD_ROUNDS} rounds x {LOAD_TOTAL} requests (medians of the rounds)"
            ),
            md_table(
                ["target", "req/s", "vs bare", "p50 ms", "p99 ms", "server CPU us/req", "verdict"],
                load_rows,
            ),
            (
                f"Verdict (latency: <= {TARGET_P50_MS:g} ms added p50 and <= {TARGET_P99_MS:g} ms "
                f"added p99; throughput: >= {TARGET_THROUGHPUT:.0%} of bare): "
                + "; ".join(verdicts)
                + "."
            ),
        ]
    )


if __name__ == "__main__":
    print(run())
