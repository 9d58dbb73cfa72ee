"""The ``denis`` command: ``up``, ``serve``, ``worker``, ``token create``, ``status``, ``dlq``,
``gate check``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack

import typer

from denis.settings import Settings

__all__ = ["main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Denis, the home assistant.")
token_app = typer.Typer(no_args_is_help=True, help="Manage bearer tokens.")
gate_app = typer.Typer(no_args_is_help=True, help="Try the request gates.")
dlq_app = typer.Typer(
    no_args_is_help=True, help="The dead letter: jobs that used up their retries."
)
graph_app = typer.Typer(no_args_is_help=True, help="The graph: home, intent routes, policies.")
app.add_typer(graph_app, name="graph")
app.add_typer(token_app, name="token")
app.add_typer(gate_app, name="gate")
app.add_typer(dlq_app, name="dlq")

# `denis up` starts one worker per group, so a device command never waits behind background work.
UP_WORKERS = (
    ("tools_mut,tools_ro", 2, False),
    ("tts,graph_ingest,ha_playback,housekeeping", 1, True),
)
_WORKER_STOP_S = 10.0

LAUNCH_TOKEN_FILE = "launch.token"  # noqa: S105 - a file name, not a secret


def _settings(host: str | None = None, port: int | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    return Settings(**overrides)  # type: ignore[arg-type]


def _serve(settings: Settings) -> None:
    from denis.api import serve  # noqa: PLC0415 - keep 'denis token' fast
    from denis.app import create_app  # noqa: PLC0415
    from denis.resilience.logs import configure_logging  # noqa: PLC0415

    configure_logging(os.environ.get("DENIS_LOG_LEVEL", "INFO"))
    serve(create_app(settings), settings.api)


def launch_token(settings: Settings) -> str:
    """The owner's login token for the printed URL, created on first run and kept (0600)."""
    from denis.sync_plane import TokenStore  # noqa: PLC0415

    store = TokenStore(settings.data_dir)
    path = settings.data_dir / LAUNCH_TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if store.is_valid(token):
            return token
    token = store.create("owner", admin=True, label="launch")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


@app.command()
def up(host: str | None = None, port: int | None = None) -> None:
    """Start Denis on the embedded defaults and print the URL to open."""
    settings = _settings(host, port)
    token = launch_token(settings)
    workers: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        stack.callback(_stop_processes, workers)
        for queues, concurrency, beat in UP_WORKERS:
            args = [sys.executable, "-m", "denis", "worker", "--queues", queues]
            args += ["--concurrency", str(concurrency)] + (["--beat"] if beat else [])
            # Its own process group: a signal to the terminal's or the service's group (Ctrl-C,
            # ``timeout``, ``kill -- -PGID``) reaches ``denis up``, which stops the worker;
            # sent to a worker's pool children as well, it could leave the worker hung in its
            # exit (Celery's prefork pool, whose children died under it).
            workers.append(
                subprocess.Popen(  # noqa: S603
                    args,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, before exec
                    process_group=0,
                )
            )
        url = f"http://{settings.host}:{settings.port}/#token={token}"
        print(f"\nDenis is starting. Open this URL (it logs you in):\n\n    {url}\n", flush=True)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            _serve(settings)
        finally:
            # The workers are stopped next (bounded: warm shutdown, then SIGKILL); a second
            # signal (make passes SIGTERM on, Ctrl-C twice) must not leave them behind.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM unwinds ``up`` like Ctrl-C does, so its workers are stopped before it exits.
    uvicorn re-raises the SIGTERM it caught once the API has shut down; under Python's default
    action that ended the process at once, leaving every worker to its parent-death signal and
    a hung one (a prefork pool whose children died under it) running for good."""
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In a worker started by ``denis up``: SIGTERM (Celery's warm shutdown) when ``denis up``
    dies, however it dies, so no worker is left behind (Linux; elsewhere, Ctrl-C still works)."""
    if sys.platform == "linux":
        import ctypes  # noqa: PLC0415

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Every worker at once: Celery's warm shutdown (finish the job in hand), then SIGKILL for
    any still running ``_WORKER_STOP_S`` later."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _WORKER_STOP_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@app.command()
def worker(
    queues: str = typer.Option("tools_mut,tools_ro", help="Comma-separated queues to consume."),
    concurrency: int = typer.Option(2, min=1, max=64, help="Prefork child processes."),
    beat: bool = typer.Option(False, "--beat", help="Also run the housekeeping schedule."),
) -> None:
    """Start a Celery worker (prefork pool, so job time limits are enforced)."""
    from denis.app import worker_main  # noqa: PLC0415
    from denis.async_plane import parse_queues  # noqa: PLC0415
    from denis.resilience.logs import configure_logging  # noqa: PLC0415

    try:
        names = parse_queues(queues)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    configure_logging(os.environ.get("DENIS_LOG_LEVEL", "INFO"))
    worker_main(_settings(), queues=names, concurrency=concurrency, beat=beat)


@app.command()
def serve(host: str | None = None, port: int | None = None) -> None:
    """Start the API server only."""
    _serve(_settings(host, port))


@token_app.command("create")
def token_create(
    user: str = typer.Option(..., help="Who the token is for."),
    admin: bool = typer.Option(False, "--admin", help="Allow admin endpoints."),
) -> None:
    """Create a token; it is printed once and stored hashed."""
    from denis.sync_plane import TokenStore  # noqa: PLC0415

    try:
        print(TokenStore(_settings().data_dir).create(user, admin=admin))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc


@app.command()
def status(url: str | None = None) -> None:
    """Each zone's mode, breaker states and queue lengths, as a table."""
    import httpx  # noqa: PLC0415

    settings = _settings()
    base = url or f"http://{settings.host}:{settings.port}"
    token_path = settings.data_dir / LAUNCH_TOKEN_FILE
    token = os.environ.get("DENIS_TOKEN") or (
        token_path.read_text(encoding="utf-8").strip() if token_path.exists() else ""
    )
    try:
        response = httpx.get(
            f"{base}/status", headers={"Authorization": f"Bearer {token}"}, timeout=3
        )
    except httpx.HTTPError as exc:
        print(f"Denis does not answer at {base}: {type(exc).__name__}", file=sys.stderr)
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        print(f"{base}/status answered {response.status_code}: {response.text}", file=sys.stderr)
        raise typer.Exit(1)
    print(_status_table(response.json()))


def _status_table(data: dict[str, dict[str, object]]) -> str:
    rows = [("ZONE", "MODE", "DETAILS")]
    for name, zone in data.get("zones", {}).items():
        assert isinstance(zone, dict)  # noqa: S101
        details = ", ".join(f"{k}={v}" for k, v in zone.items() if k != "mode")
        rows.append((name, str(zone.get("mode")), details))
    rows.append(("", "", ""))
    rows.append(("BREAKER", "STATE", ""))
    rows.extend((name, str(state), "") for name, state in data.get("breakers", {}).items())
    if data.get("queues"):
        rows.append(("", "", ""))
        rows.append(("QUEUE", "LENGTH", ""))
        rows.extend((name, str(length), "") for name, length in data["queues"].items())
    width = max(len(r[0]) for r in rows) + 2
    return "\n".join(f"{a:<{width}}{b:<12}{c}".rstrip() for a, b, c in rows)


@dlq_app.command("list")
def dlq_list() -> None:
    """One JSON object per dead letter: key, job, queue, arguments, error, attempts."""
    from denis.async_plane import open_ledger  # noqa: PLC0415

    for letter in open_ledger(_settings().async_plane).dead_letters():
        print(json.dumps(dataclasses.asdict(letter)))


@dlq_app.command("replay")
def dlq_replay(
    key: str | None = typer.Argument(None, help="The dead letter's key."),
    all_: bool = typer.Option(False, "--all", help="Replay every dead letter."),
) -> None:
    """Send dead-lettered jobs again (to the broker, or run here if it cannot take them)."""
    if (key is None) == (not all_):
        print("error: give a KEY or --all", file=sys.stderr)
        raise typer.Exit(2)
    replayed = asyncio.run(_replay(key))
    for item in replayed:
        print(json.dumps(item))
    if key is not None and not replayed:
        print(f"error: no dead letter with key {key!r}", file=sys.stderr)
        raise typer.Exit(1)


async def _replay(key: str | None) -> list[dict[str, object]]:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from denis.app import build_registry  # noqa: PLC0415
    from denis.async_plane import open_async_plane  # noqa: PLC0415
    from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signals  # noqa: PLC0415
    from denis.resilience.metrics import Metrics  # noqa: PLC0415

    signals, clock = Signals(Metrics(CollectorRegistry())), MonotonicClock()
    settings = _settings()
    async with open_async_plane(
        settings.async_plane,
        registry=build_registry(settings)[0],
        signals=signals,
        health=HealthBoard(signals),
        clock=clock,
    ) as plane:
        deadline = Deadline.start(clock, 30.0)
        if key is None:
            return await plane.replay_all(deadline)
        one = await plane.replay(key, deadline)
        return [one] if one is not None else []


@dlq_app.command("purge")
def dlq_purge() -> None:
    """Delete every dead letter."""
    from denis.async_plane import open_ledger  # noqa: PLC0415

    print(json.dumps({"purged": open_ledger(_settings().async_plane).purge_dead_letters()}))


@graph_app.command("load")
def graph_load(path: str = typer.Argument(..., help="A home file (YAML).")) -> None:
    """Load a home/routes/policies file into the graph (replacing what is there)."""
    from pathlib import Path  # noqa: PLC0415

    from denis.errors import DenisError  # noqa: PLC0415
    from denis.graph import read_home_file  # noqa: PLC0415

    try:
        home = read_home_file(Path(path))
    except DenisError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        raise typer.Exit(2) from exc
    if not asyncio.run(_graph_load(home)):
        print("error: the graph is unavailable (down, or held by a running Denis)", file=sys.stderr)
        raise typer.Exit(1)
    print(json.dumps({"loaded": {k: len(v) for k, v in home.to_json().items()}}))


async def _graph_load(home: object) -> bool:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from denis.graph import HomeGraph, open_graph_zone  # noqa: PLC0415
    from denis.resilience import Deadline, HealthBoard, MonotonicClock, Signals  # noqa: PLC0415
    from denis.resilience.metrics import Metrics  # noqa: PLC0415

    assert isinstance(home, HomeGraph)  # noqa: S101
    signals, clock = Signals(Metrics(CollectorRegistry())), MonotonicClock()
    try:
        async with open_graph_zone(
            _settings().graph, signals=signals, health=HealthBoard(signals), clock=clock
        ) as zone:
            return await zone.resolver.load(home, Deadline.start(clock, 30.0))
    except RuntimeError:  # the embedded database is locked by a running Denis
        return False


@graph_app.command("export-cache")
def graph_export_cache() -> None:
    """Print the legacy cache (the last good home, routes and policies) as JSON."""
    path = _settings().data_dir / "graph-cache.json"
    if not path.exists():
        print("error: no cache yet (it is written once the graph has answered)", file=sys.stderr)
        raise typer.Exit(1)
    print(path.read_text(encoding="utf-8"))


@gate_app.command("check")
def gate_check() -> None:
    """Read texts on stdin (one per line, plain or a JSON string); print one verdict per line:
    the gate /chat runs (rules, then the classifier), with DENIS_INJECTION_RULES and
    DENIS_INJECTION_THRESHOLD applied."""
    from denis.sync_plane import build_detector  # noqa: PLC0415

    sync = _settings().sync
    detector = build_detector(sync.injection_rules, sync.injection_threshold)
    for line in sys.stdin:
        text = line.rstrip("\n")
        if text.startswith('"'):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                decoded = text
            text = decoded if isinstance(decoded, str) else text
        verdict = detector.inspect(text)
        print(
            json.dumps({"blocked": verdict.blocked, "score": verdict.score, "layer": verdict.layer})
        )


def main() -> None:
    from denis.resilience.logs import configure_logging  # noqa: PLC0415

    configure_logging(os.environ.get("DENIS_LOG_LEVEL", "WARNING"))  # to stderr; stdout is output
    app()


if __name__ == "__main__":
    main()
