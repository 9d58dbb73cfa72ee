"""Shared fixtures: real servers (see ``servers.py``) and an in-process app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from denis.app import create_app
from denis.settings import Settings
from fake_llm import FakeLlm
from servers import (
    DenisProcess,
    DenisWorker,
    HomeAssistantSeed,
    HomeAssistantServer,
    Neo4jServer,
    RedisServer,
    create_token,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """redis-py on this test's ``redis_server``: for looking at what the code under test wrote."""
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def neo4j_server(tmp_path: Path) -> Iterator[Neo4jServer]:
    """A real Neo4j of this test's own (Bolt, no auth): kill, pause and restart it freely.
    A JVM start takes seconds (see ``start_seconds``); tests that only query share
    ``neo4j_session`` instead."""
    server = Neo4jServer(tmp_path / "neo4j").start()
    try:
        yield server
    finally:
        server.kill()  # its store is thrown away with tmp_path: no clean shutdown needed


@pytest.fixture(scope="session")
def neo4j_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neo4jServer]:
    """One real Neo4j for the whole session, started on first use. Never kill, pause or
    restart it (use ``neo4j_server``), and clean up the data you create."""
    server = Neo4jServer(tmp_path_factory.mktemp("neo4j-session")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def home_assistant_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HomeAssistantServer]:
    """One real Home Assistant (``demo`` integration, onboarded, ``.token``) for the whole
    session, started on first use (seconds). Never kill, pause or restart it (use
    ``home_assistant_factory``); set the device states you rely on instead of assuming them."""
    server = HomeAssistantServer(tmp_path_factory.mktemp("ha-session")).start()
    try:
        yield server
    finally:
        server.kill()  # its config is thrown away with the temporary directory


@pytest.fixture(scope="session")
def home_assistant_seed(
    home_assistant_session: HomeAssistantServer, tmp_path_factory: pytest.TempPathFactory
) -> HomeAssistantSeed:
    """The session instance's onboarded storage, to start more without onboarding each."""
    return home_assistant_session.seed(tmp_path_factory.mktemp("ha-seed") / "storage")


@pytest.fixture
def home_assistant_factory(
    tmp_path: Path, home_assistant_seed: HomeAssistantSeed
) -> Iterator[Callable[[], HomeAssistantServer]]:
    """Start real Home Assistants of this test's own (kill, pause, restart them freely), each
    ready in a few seconds from the session's seed; all are killed at the end."""
    started: list[HomeAssistantServer] = []

    def make() -> HomeAssistantServer:
        server = HomeAssistantServer(tmp_path / f"ha-{len(started)}", home_assistant_seed)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        # The real embedded graph engine, in memory: a tenth of the start cost of one on disk.
        overrides.setdefault("graph_embedded_path", ":memory:")
        return Settings(data_dir=data_dir, **overrides)

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """An in-process app (lifespan run) with its own metrics registry; extra kwargs go to
    ``create_app`` (responder, detector, clock) or to ``Settings``."""
    clients: list[TestClient] = []

    def make(*, app_kwargs: dict[str, Any] | None = None, **settings: Any) -> TestClient:
        app: FastAPI = create_app(
            make_settings(**settings), registry=CollectorRegistry(), **(app_kwargs or {})
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def token(data_dir: Path) -> str:
    return create_token(data_dir, "alice")


@pytest.fixture
def admin_token(data_dir: Path) -> str:
    return create_token(data_dir, "root", admin=True)


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def denis_factory(tmp_path: Path) -> Iterator[Callable[..., DenisProcess]]:
    started: list[DenisProcess] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None) -> DenisProcess:
        proc = DenisProcess(data_dir or tmp_path / "data", env)
        started.append(proc)
        return proc.start()

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., DenisWorker]]:
    """Start real ``denis worker`` processes; every one still running is killed at the end."""
    started: list[DenisWorker] = []

    def make(queues: str, env: dict[str, str] | None = None, **kwargs: Any) -> DenisWorker:
        data_dir = kwargs.pop("data_dir", tmp_path / "data")
        worker = DenisWorker(data_dir, queues, env, **kwargs)
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.kill()


@pytest.fixture
def fake_llm() -> Iterator[FakeLlm]:
    """A local OpenAI-compatible endpoint (``tests/fake_llm.py``), stopped at the end."""
    llm = FakeLlm().start()
    try:
        yield llm
    finally:
        llm.stop()
