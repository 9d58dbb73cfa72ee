"""What the benchmarks share: real servers, a raw HTTP/1.1 load generator, the bare baseline.

Everything is measured as a ratio against a baseline taken in the same run, because the
machine is shared and noisy. The load generator speaks HTTP/1.1 over keep-alive sockets with
pre-built request bytes, so the client costs far less CPU per request than the servers under
test (an httpx client would be the bottleneck before a bare uvicorn route is).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
sys.path.insert(0, str(REPO / "tests"))  # servers.py: RedisServer, DenisProcess, create_token

from servers import DenisProcess, RedisServer, create_token, free_port, wait_for_port  # noqa: E402

__all__ = [
    "CHAT_TEXT",
    "HIGH_LIMITS",
    "BareProcess",
    "BenchDirs",
    "DenisProcess",
    "FoundationProcess",
    "LoadResult",
    "LoadSample",
    "RedisServer",
    "chat_request",
    "create_token",
    "load_rounds",
    "machine_line",
    "make_bare_app",
    "md_table",
    "measure_load",
    "ms",
    "percentile",
    "rotated",
    "run_async",
    "run_load",
    "server_cpu_s",
    "started",
    "warm_up",
    "workspace",
]

T = TypeVar("T")
CHAT_TEXT = "what time is it?"
# Limits so high that the benchmark never trips them: it measures the checks, not refusals.
HIGH_LIMITS = {
    "DENIS_RATE_LIMIT_USER": "1000000/minute",
    "DENIS_RATE_LIMIT_CLIENT": "1000000/minute",
    "DENIS_BUDGET_TOKENS_PER_DAY": "1000000000",
    "DENIS_LOG_LEVEL": "INFO",  # what `make run` uses; Denis logs state changes, not requests
}


def make_bare_app() -> FastAPI:
    """The baseline: a bare FastAPI ``POST /chat`` that reads the JSON body and answers a reply
    of the same shape as Denis's, with none of Denis's middleware, auth or gates."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/chat")
    async def chat(request: Request) -> JSONResponse:
        data = json.loads(await request.body())
        return JSONResponse(
            {
                "reply": f"It's {time.strftime('%H:%M')}.",
                "lang": "en",
                "intent": "time" if "time" in data.get("text", "") else "unknown",
                "trace_id": "0" * 32,
                "degraded": [],
                "audio_url": None,
            }
        )

    return app


class BareProcess:
    """The bare app under uvicorn, configured like ``denis.api.server.serve`` (uvloop,
    httptools, no access log, keep-alive 5 s)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BareProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "harness:make_bare_app",
                    "--app-dir",
                    str(BENCH_DIR),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--timeout-keep-alive",
                    "5",
                ],
                stdout=log,
                stderr=log,
            )
        wait_for_port(self.port, timeout_s=20)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


class FoundationProcess(DenisProcess):
    """``benchmarks/foundation_server.py``: ``denis serve`` with the sync plane's
    ``BasicResponder`` (the pipeline of issue 2; the assistant has a benchmark of its own)."""

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "foundation_server.py")]


def chat_request(port: int, token: str, text: str = CHAT_TEXT) -> bytes:
    """The exact bytes of one keep-alive ``POST /chat``, sent to Denis and the bare app alike."""
    body = json.dumps({"text": text}).encode()
    head = (
        f"POST /chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class LoadResult:
    """Per request: start (s, perf_counter), latency (s), status, and whether the reply said
    Denis ran degraded (``"degraded":["sync"]``)."""

    elapsed_s: float = 0.0
    starts_s: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    degraded: list[bool] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput_rps(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def errors(self) -> int:
        return sum(1 for s in self.statuses if s != 200)

    def p(self, q: float) -> float:
        return percentile(self.latencies_s, q)


async def _one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lowered = head.lower()
    at = lowered.find(b"content-length:")
    length = int(lowered[at + 15 : lowered.find(b"\r\n", at)]) if at >= 0 else 0
    body = await reader.readexactly(length)
    return status, body


async def run_load(
    port: int, request: bytes, *, concurrency: int, total: int, duration_s: float | None = None
) -> LoadResult:
    """Send ``total`` requests (or as many as fit in ``duration_s``) over ``concurrency``
    keep-alive connections, each connection one request at a time."""
    result = LoadResult()
    left = [total]
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    stop_at: float | None = None

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while left[0] > 0 and (stop_at is None or time.perf_counter() < stop_at):
            left[0] -= 1
            sent_at = time.perf_counter()
            status, body = await _one(reader, writer, request)
            result.latencies_s.append(time.perf_counter() - sent_at)
            result.starts_s.append(sent_at)
            result.statuses.append(status)
            result.degraded.append(b'"degraded":["sync"]' in body)

    began = time.perf_counter()
    if duration_s is not None:
        stop_at = began + duration_s
    try:
        async with asyncio.TaskGroup() as group:
            for reader, writer in connections:
                group.create_task(worker(reader, writer))
    finally:
        for _, writer in connections:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    result.elapsed_s = time.perf_counter() - began
    return result


def rotated(names: list[str], round_no: int) -> list[str]:
    """``names`` starting at a different one each round, so drift hits every target alike."""
    shift = round_no % len(names)
    return names[shift:] + names[:shift]


async def warm_up(
    targets: Mapping[str, BareProcess | DenisProcess],
    requests: Mapping[str, bytes],
    total: int = 500,
) -> None:
    """Imports, pools, caches and Lua scripts loaded before anything is measured."""
    for name, target in targets.items():
        await run_load(target.port, requests[name], concurrency=4, total=total)


@dataclass(frozen=True)
class LoadSample:
    """One block of load against one server, with the server's CPU per request (whole
    process, and its main thread, where the event loop runs)."""

    result: LoadResult
    cpu_us: float
    main_us: float


async def measure_load(
    name: str,
    target: BareProcess | DenisProcess,
    request: bytes,
    *,
    concurrency: int,
    total: int,
) -> LoadSample:
    """``total`` requests over ``concurrency`` connections; any non-200 answer is an error."""
    pid = target.proc.pid  # type: ignore[union-attr]
    cpu_before, main_before = server_cpu_s(pid), server_cpu_s(pid, main_thread=True)
    result = await run_load(target.port, request, concurrency=concurrency, total=total)
    if result.errors:
        raise RuntimeError(f"{name}: {result.errors} non-200 answers under load")
    per_request_us = 1e6 / result.count
    return LoadSample(
        result,
        (server_cpu_s(pid) - cpu_before) * per_request_us,
        (server_cpu_s(pid, main_thread=True) - main_before) * per_request_us,
    )


async def load_rounds(
    targets: Mapping[str, BareProcess | DenisProcess],
    requests: Mapping[str, bytes],
    rounds: int,
    *,
    concurrency: int,
    total: int,
) -> AsyncIterator[tuple[str, LoadSample]]:
    """``rounds`` blocks of ``measure_load`` per target, in ``rotated`` order, each sample
    yielded as it is taken (the caller may measure more before the next block)."""
    for round_no in range(rounds):
        for name in rotated(list(targets), round_no):
            sample = await measure_load(
                name, targets[name], requests[name], concurrency=concurrency, total=total
            )
            yield name, sample


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed, the loop uvicorn picks for Denis too."""
    try:
        import uvloop  # noqa: PLC0415

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def server_cpu_s(pid: int, *, main_thread: bool = False) -> float:
    """User + system CPU seconds a process (or only its main thread, the one running the
    event loop) has used so far (Linux ``/proc``)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchDirs(NamedTuple):
    """A benchmark's scratch space: ``work`` for logs and graphs, ``data`` the Denis data
    directory the servers share, ``token`` a bearer token valid there."""

    work: Path
    data: Path
    token: str


@contextlib.contextmanager
def workspace(prefix: str = "denis-bench-") -> Iterator[BenchDirs]:
    """A temporary directory with a data directory and a token in it, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        yield BenchDirs(work, data, create_token(data, "bench"))


@contextlib.contextmanager
def started(*servers: BareProcess | DenisProcess | RedisServer) -> Iterator[None]:
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; nproc={os.cpu_count()}; "
        f"Python {platform.python_version()}; {platform.machine()}; load avg before: {load}"
    )
