"""The assistant end to end: ``POST /chat`` latency of a device command and a question on the
embedded defaults, against the foundation's bare pipeline, same run.

The assistant (``create_app``'s default responder) answers a turn with: hassil intent
recognition → graph route and policy (embedded graph) → a tool job through the async plane's
``Dispatcher`` (inline in a thread when no worker serves the queue, else on a ``denis worker``)
→ phrased reply → ``VoiceOut`` (the reply's WAV, made by espeak-ng on the ``tts`` queue the
first time a reply text is seen, then found in the audio folder). The foundation's pipeline is
the same app with the sync plane's ``BasicResponder`` (a regex, a clock, no tools, no voice).
Every target runs the whole pipeline (auth, limits, budget, injection gate, DecisionTrace).

Voice stays on, as deployed: each reply text is spoken once in the warm-up, so the measured
turns find their audio cached. The one exception is "what time is it?", whose reply changes
every minute: its first turn of each minute runs espeak-ng (inline in (a), on the ``tts``
worker in (b)); that shows in its tail. The cost of the cached voice step alone is measured
separately, so a text-only figure is "with voice" minus that.

(a) In process: ``httpx.AsyncClient`` over ``httpx.ASGITransport`` (lifespans entered), the
    embedded defaults (graph in memory, no Redis, no worker: tool and TTS jobs run inline),
    sequential, targets interleaved in rotating blocks so drift hits all alike.
(b) Real processes as ``make run`` starts them: ``python -m denis serve`` plus the worker
    groups of ``denis.cli.UP_WORKERS`` sharing its data dir (embedded graph on disk, kombu's
    file broker), measured once ``/status`` says the async plane is ``normal``. Baselines: the
    foundation's pipeline in a process of its own (``harness.FoundationProcess``:
    ``create_app(Settings(), responder=BasicResponder())`` under ``denis.api.serve``, exactly
    what ``denis serve`` runs, but that responder) and ``harness.make_bare_app`` under uvicorn.
    Sequential requests over one keep-alive connection per block, rotating blocks.
(c) Intent recognition alone: ``IntentEngine.recognize`` on 20 sentences (pure CPU, on the
    event loop of every assistant turn).
(d) The tool job alone: ``Dispatcher.submit(wait=True)`` of each turn's job with no worker
    (journal, claim and run in a thread, result in the SQLite ledger), the job part of (a).

No targets in the issue beyond "report it"; there are no assertions.

Run: ``.venv/bin/python benchmarks/bench_assistant.py`` (or ``run_all.py assistant``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from prometheus_client import CollectorRegistry

from denis.app import build_registry, create_app
from denis.assistant.intents import IntentEngine
from denis.assistant.tools import job_name
from denis.assistant.voice import VoiceOut, audio_key, audio_name, synthesize
from denis.async_plane import Dispatcher, open_async_plane
from denis.cli import UP_WORKERS
from denis.graph import default_home
from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signals
from denis.resilience.logs import configure_logging
from denis.resilience.metrics import Metrics
from denis.settings import Settings
from denis.sync_plane import BasicResponder
from harness import (
    HIGH_LIMITS,
    BareProcess,
    DenisProcess,
    FoundationProcess,
    chat_request,
    create_token,
    md_table,
    ms,
    percentile,
    run_async,
    started,
)
from servers import DenisWorker  # tests/, on the path once harness is imported

INPROC_WARMUP = 10  # per target (each distinct reply text gets spoken here)
INPROC_ROUNDS = 10
INPROC_BLOCK = 30  # 300 per target
PROC_WARMUP = 6
PROC_ROUNDS = 6
PROC_BLOCK = 25  # 150 per target
INTENT_REPEATS = 25  # per sentence: 500 recognitions
VOICE_CALLS = 300
WORKERS_READY_S = 60.0

FOUNDATION = "foundation pipeline: what time is it? (BasicResponder)"
BARE = "bare FastAPI route (context)"
TIME = "assistant: what time is it?"
QUESTION = "assistant: question (is the kitchen light on?)"
COMMAND = "assistant: device command (turn on / turn off the kitchen light, alternating)"
JOB_TIME = "tool.clock.time"
JOB_READ = "tool.device.get_state (light.kitchen)"
JOB_COMMAND = "tool.device.turn_on / turn_off (light.kitchen, alternating, keyed)"

TEXTS: dict[str, tuple[str, ...]] = {
    BARE: ("what time is it?",),
    FOUNDATION: ("what time is it?",),
    TIME: ("what time is it?",),
    QUESTION: ("is the kitchen light on?",),
    COMMAND: ("turn on the kitchen light", "turn off the kitchen light"),
}

SENTENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "time / date": (
        ("what time is it?", "en"),
        ("what's the date today?", "en"),
        ("¿qué hora es?", "es"),
        ("¿qué día es hoy?", "es"),
    ),
    "device command": (
        ("turn on the kitchen light", "en"),
        ("turn off the lights in the living room", "en"),
        ("set the kitchen light to 40%", "en"),
        ("set the temperature to 23 degrees", "en"),
        ("open the garage door", "en"),
        ("apaga la luz de la cocina", "es"),
    ),
    "question": (
        ("is the kitchen light on?", "en"),
        ("is the garage door open?", "en"),
        ("what is the temperature in the living room?", "en"),
        ("¿qué temperatura hace en el salón?", "es"),
    ),
    "timer / greeting / help": (
        ("set a timer for 5 minutes", "en"),
        ("hello", "en"),
        ("what can you do?", "en"),
    ),
    "not understood": (
        ("what is the capital of Mongolia?", "en"),
        ("tell me a long story about dragons and castles please", "en"),
        ("¿quién ganó el mundial de 1986?", "es"),
    ),
}


@dataclass
class Samples:
    latencies_s: list[float] = field(default_factory=list)
    degraded: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)

    def add(self, elapsed_s: float, body: dict[str, Any]) -> None:
        self.latencies_s.append(elapsed_s)
        for mode in body.get("degraded") or []:
            self.degraded[mode] += 1
        self.replies[str(body.get("reply", ""))[:40]] += 1


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        graph_embedded_path=":memory:",
        rate_limit_user=HIGH_LIMITS["DENIS_RATE_LIMIT_USER"],
        rate_limit_client=HIGH_LIMITS["DENIS_RATE_LIMIT_CLIENT"],
        budget_tokens_per_day=int(HIGH_LIMITS["DENIS_BUDGET_TOKENS_PER_DAY"]),
        **overrides,
    )


def _rotations(names: list[str], rounds: int) -> list[list[str]]:
    return [names[r % len(names) :] + names[: r % len(names)] for r in range(rounds)]


# -- (a) in process -----------------------------------------------------------------------


async def _in_process(work: Path) -> dict[str, Samples]:
    dirs = {"foundation": work / "inproc-foundation", "assistant": work / "inproc-assistant"}
    for path in dirs.values():
        path.mkdir()
    apps = {
        "foundation": create_app(
            _settings(dirs["foundation"]), responder=BasicResponder(), registry=CollectorRegistry()
        ),
        "assistant": create_app(_settings(dirs["assistant"]), registry=CollectorRegistry()),
    }
    tokens = {name: create_token(path, "bench") for name, path in dirs.items()}
    app_of = {FOUNDATION: "foundation", TIME: "assistant", QUESTION: "assistant"}
    app_of[COMMAND] = "assistant"
    samples = {name: Samples() for name in app_of}
    turns = dict.fromkeys(app_of, 0)
    async with AsyncExitStack() as stack:
        clients: dict[str, httpx.AsyncClient] = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://127.0.0.1",
                    headers={"Authorization": f"Bearer {tokens[name]}"},
                    timeout=30,
                )
            )

        async def block(target: str, count: int, out: Samples | None) -> None:
            client, texts = clients[app_of[target]], TEXTS[target]
            for _ in range(count):
                text = texts[turns[target] % len(texts)]
                turns[target] += 1
                began = time.perf_counter()
                response = await client.post("/chat", json={"text": text, "session_id": "b"})
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"{target}: {response.status_code} {response.text}")
                if out is not None:
                    out.add(elapsed, response.json())

        for target in app_of:
            await block(target, INPROC_WARMUP, None)
        for order in _rotations(list(app_of), INPROC_ROUNDS):
            for target in order:
                await block(target, INPROC_BLOCK, samples[target])
    return samples


async def _voice_alone(work: Path) -> list[float]:
    """``VoiceOut.speak`` of a reply whose WAV exists: what every measured turn pays for voice
    (a thread hop for the HMAC name and one ``is_file``)."""
    data_dir = work / "voice"
    data_dir.mkdir()
    settings = _settings(data_dir).assistant
    text = "Done: the kitchen light is on."
    name = audio_name(audio_key(data_dir), "en", text)
    synthesize(settings, data_dir, {"text": text, "lang": "en", "name": name})
    clock = MonotonicClock()
    voice = VoiceOut(
        settings,
        dispatcher=cast("Dispatcher", None),  # never used: the reply is cached
        signals=Signals(Metrics(CollectorRegistry())),
        clock=clock,
    )
    out: list[float] = []
    for i in range(VOICE_CALLS + 20):
        began = time.perf_counter()
        url = await voice.speak(text, "en", Deadline.start(clock, 15.0), 0)
        elapsed = time.perf_counter() - began
        if url is None:
            raise RuntimeError("the cached reply was not found")
        if i >= 20:
            out.append(elapsed)
    return out


# -- (b) real processes -------------------------------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, Any]]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lowered = head.lower()
    at = lowered.find(b"content-length:")
    length = int(lowered[at + 15 : lowered.find(b"\r\n", at)])
    body = await reader.readexactly(length)
    return int(head[9:12]), json.loads(body)


async def _sequential(port: int, requests: list[bytes], start: int, count: int) -> Samples:
    """``count`` requests, one at a time over one keep-alive connection, cycling through
    ``requests`` from index ``start``."""
    out = Samples()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(start, start + count):
            began = time.perf_counter()
            status, body = await _exchange(reader, writer, requests[i % len(requests)])
            elapsed = time.perf_counter() - began
            if status != 200:
                raise RuntimeError(f"port {port}: {status} {body}")
            out.add(elapsed, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return out


async def _over_sockets(ports: dict[str, int], tokens: dict[str, str]) -> dict[str, Samples]:
    requests = {
        target: [chat_request(port, tokens[target], text) for text in TEXTS[target]]
        for target, port in ports.items()
    }
    turns = dict.fromkeys(ports, 0)
    samples = {target: Samples() for target in ports}

    async def block(target: str, count: int, out: Samples | None) -> None:
        got = await _sequential(ports[target], requests[target], turns[target], count)
        turns[target] += count
        if out is not None:
            out.latencies_s.extend(got.latencies_s)
            out.degraded.update(got.degraded)
            out.replies.update(got.replies)

    for target in ports:
        await block(target, PROC_WARMUP, None)
    for order in _rotations(list(ports), PROC_ROUNDS):
        for target in order:
            await block(target, PROC_BLOCK, samples[target])
    return samples


def _wait_for_workers(url: str, token: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < WORKERS_READY_S:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            status = httpx.get(
                f"{url}/status", headers={"Authorization": f"Bearer {token}"}, timeout=2
            ).json()
            if status["zones"]["async"]["mode"] == "normal":
                return time.monotonic() - began
        time.sleep(0.2)
    raise TimeoutError("the API did not see the workers (async mode never 'normal')")


def _who_ran(data_dir: Path, api_pid: int) -> dict[str, Counter[str]]:
    """Per job name: how many ran in the API process (inline) and how many on a worker."""
    with contextlib.closing(sqlite3.connect(data_dir / "jobs.sqlite3")) as conn:
        rows = conn.execute("SELECT name, owner FROM jobs").fetchall()
    counts: dict[str, Counter[str]] = {}
    for name, owner in rows:
        where = "API" if str(owner).endswith(f"/{api_pid}") else "worker"
        counts.setdefault(name, Counter())[where] += 1
    return counts


def _processes(work: Path) -> tuple[dict[str, Samples], dict[str, Counter[str]], float]:
    api_dir, foundation_dir = work / "proc-assistant", work / "proc-foundation"
    # As `make run`: the embedded graph on disk ("" = the default <data_dir>/graph/db).
    env = {**HIGH_LIMITS, "DENIS_GRAPH_EMBEDDED_PATH": ""}
    api = DenisProcess(api_dir, env)
    foundation = FoundationProcess(foundation_dir, env)
    bare = BareProcess(work / "bare.log")
    workers = [
        # the settings' default heartbeat, as `denis up` runs them (the tests' 0.5 s is faster)
        DenisWorker(api_dir, queues, env | {"DENIS_WORKER_HEARTBEAT_S": "2"}, concurrency=c, beat=b)
        for queues, c, b in UP_WORKERS
    ]
    with started(bare, foundation, api, *workers):  # type: ignore[arg-type]
        for worker in workers:
            worker.start()
        api.start()
        foundation.start()
        bare.start()
        tokens = {
            TIME: create_token(api_dir, "bench"),
            FOUNDATION: create_token(foundation_dir, "bench"),
        }
        tokens[QUESTION] = tokens[COMMAND] = tokens[TIME]
        tokens[BARE] = tokens[TIME]  # ignored by the bare route
        waited_s = _wait_for_workers(api.url, tokens[TIME])
        ports = {
            BARE: bare.port,
            FOUNDATION: foundation.port,
            TIME: api.port,
            QUESTION: api.port,
            COMMAND: api.port,
        }
        samples = run_async(_over_sockets(ports, tokens))
        assert api.proc is not None
        ran = _who_ran(api_dir, api.proc.pid)
    return samples, ran, waited_s


# -- (c) intent recognition ---------------------------------------------------------------


def _intents() -> tuple[dict[str, list[float]], float]:
    began = time.perf_counter()
    engine = IntentEngine(default_home())
    build_s = time.perf_counter() - began
    for group in SENTENCES.values():  # warm-up
        for text, lang in group:
            engine.recognize(text, lang)
    timed: dict[str, list[float]] = {kind: [] for kind in SENTENCES}
    for _ in range(INTENT_REPEATS):
        for kind, sentences in SENTENCES.items():
            for text, lang in sentences:
                t0 = time.perf_counter()
                engine.recognize(text, lang)
                timed[kind].append(time.perf_counter() - t0)
    return timed, build_s


# -- (d) the tool job alone ---------------------------------------------------------------


async def _jobs_inline(work: Path) -> dict[str, list[float]]:
    """``Dispatcher.submit(wait=True)`` of each turn's tool job, no worker (inline in a thread,
    journaled in the SQLite ledger), as the responder calls it: the job part of (a)."""
    data_dir = work / "jobs"
    data_dir.mkdir()
    settings = _settings(data_dir)
    registry, parts = build_registry(settings)
    parts.runtime.adopt(default_home())
    signals = Signals(Metrics(CollectorRegistry()))
    clock = MonotonicClock()
    device = {"entity_ids": ["light.kitchen"], "data": {}}
    calls: dict[str, tuple[tuple[str, dict[str, Any], bool], ...]] = {
        JOB_TIME: ((job_name("clock.time"), {"user": "bench"}, False),),
        JOB_READ: ((job_name("device.get_state"), device, False),),
        JOB_COMMAND: (
            (job_name("device.turn_on"), device, True),
            (job_name("device.turn_off"), device, True),
        ),
    }
    timed: dict[str, list[float]] = {name: [] for name in calls}
    turns = dict.fromkeys(calls, 0)
    async with open_async_plane(
        settings.async_plane,
        registry=registry,
        signals=signals,
        health=HealthBoard(signals),
        clock=clock,
    ) as plane:

        async def block(target: str, count: int, out: list[float] | None) -> None:
            for _ in range(count):
                job, args, keyed = calls[target][turns[target] % len(calls[target])]
                turns[target] += 1
                key = f"bench:{target}:{turns[target]}" if keyed else None
                began = time.perf_counter()
                outcome = await plane.dispatcher.submit(
                    job, args, deadline=Deadline.start(clock, 15.0), key=key, wait=True
                )
                elapsed = time.perf_counter() - began
                if outcome.state != "done":
                    raise RuntimeError(f"{job}: {outcome.state} {outcome.error}")
                if out is not None:
                    out.append(elapsed)

        for target in calls:
            await block(target, 10, None)
        for order in _rotations(list(calls), INPROC_ROUNDS):
            for target in order:
                await block(target, INPROC_BLOCK, timed[target])
    return timed


# -- report ---------------------------------------------------------------------------------


def _latency_rows(samples: dict[str, Samples], baseline: str) -> list[list[str]]:
    base = samples[baseline].latencies_s
    b50, b95 = percentile(base, 50), percentile(base, 95)
    rows = []
    for target, got in samples.items():
        values = got.latencies_s
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        degraded = ", ".join(f"{k} x{v}" for k, v in sorted(got.degraded.items())) or "none"
        ratio = "baseline" if target == baseline else f"{p50 / b50:.1f} / {p95 / b95:.1f}"
        rows.append(
            [target, str(len(values)), ms(p50), ms(p95), ms(p99), ms(max(values)), ratio, degraded]
        )
    return rows


def run() -> str:
    configure_logging("WARNING")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="denis-bench-assistant-") as tmp:
        work = Path(tmp)
        print("assistant: intent recognition ...", flush=True)
        intents, build_s = _intents()
        print("assistant: in process (ASGITransport) ...", flush=True)
        inproc = run_async(_in_process(work))
        voice = run_async(_voice_alone(work))
        jobs = run_async(_jobs_inline(work))
        print("assistant: real processes (serve + UP_WORKERS) ...", flush=True)
        procs, ran, waited_s = _processes(work)

    header = ["target", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "x foundation p50 / p95"]
    header.append("degraded replies")
    all_intents = [v for values in intents.values() for v in values]
    intent_rows = [
        [
            group,
            str(len(SENTENCES[group])),
            str(len(values)),
            ms(statistics.median(values)),
            ms(percentile(values, 95)),
            ms(max(values)),
        ]
        for group, values in intents.items()
    ]
    intent_rows.append(
        [
            "**all**",
            str(sum(len(s) for s in SENTENCES.values())),
            str(len(all_intents)),
            ms(statistics.median(all_intents)),
            ms(percentile(all_intents, 95)),
            ms(max(all_intents)),
        ]
    )
    ran_text = "; ".join(
        f"`{name}`: {counts['worker']} on a worker, {counts['API']} inline"
        for name, counts in sorted(ran.items())
    )
    return "\n\n".join(
        [
            (
                "### (a) In process, embedded defaults (graph in memory, no Redis, no worker: "
                "jobs inline), voice on (each reply's audio cached after its first turn)"
            ),
            md_table(header, _latency_rows(inproc, FOUNDATION)),
            (
                f"Voice step alone, `VoiceOut.speak` of a cached reply ({len(voice)} calls): "
                f"p50 {ms(percentile(voice, 50))} ms, p95 {ms(percentile(voice, 95))} ms, "
                f"p99 {ms(percentile(voice, 99))} ms."
            ),
            (
                "### (b) Real processes: `denis serve` + the `UP_WORKERS` groups "
                "(embedded graph on disk, file broker), sequential, 1 keep-alive connection"
            ),
            md_table(header, _latency_rows(procs, FOUNDATION)),
            (
                f"Workers seen by the API (async mode normal) {waited_s:.1f} s after it was ready. "
                f"Jobs in the ledger: {ran_text}."
            ),
            "### (c) Intent recognition alone, `IntentEngine.recognize` (on the event loop)",
            md_table(["sentences", "distinct", "n", "median ms", "p95 ms", "max ms"], intent_rows),
            f"`IntentEngine(default_home())` built in {build_s * 1000:.0f} ms (once, at start).",
            "### (d) The tool job alone, `Dispatcher.submit(wait=True)`, no worker (inline)",
            md_table(
                ["job", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                [
                    [job, str(len(v)), *(ms(percentile(v, q)) for q in (50, 95, 99)), ms(max(v))]
                    for job, v in jobs.items()
                ],
            ),
        ]
    )


if __name__ == "__main__":
    print(run())
