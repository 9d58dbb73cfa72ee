"""Real servers for the tests: started as subprocesses on free loopback ports, then killed,
paused (SIGSTOP) or restarted to cause the faults the design talks about.

A missing program fails the test under ``CI=true`` and skips it (with the reason) elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Self

import httpx
import pytest

IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_component(message: str) -> NoReturn:
    """Skip locally; under CI=true a missing component is a failure."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_component(f"{name} is not installed (scripts/install-test-deps.sh installs it)")
    return path


def require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        missing_component(f"{path} is missing ({hint})")
    return path


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class _FaultableServer:
    """A server process the tests can crash (SIGKILL) or hang (SIGSTOP) and bring back."""

    proc: subprocess.Popen[bytes] | None
    paused: bool

    def kill(self) -> None:
        """SIGKILL: the port refuses connections from now on (committed data survives)."""
        if self.proc is not None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the port accepts connections but nothing ever answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False


class _SlowStartServer(_FaultableServer):
    """A server with a slow start (a JVM, Home Assistant) and a clean shutdown worth waiting
    for (a checkpoint, saved state)."""

    def start(self, timeout_s: float = 90.0) -> _SlowStartServer:
        raise NotImplementedError

    def restart(self, timeout_s: float = 90.0) -> None:
        """Kill, then start again on the same port and data (Home Assistant's devices start
        afresh)."""
        self.kill()
        self.start(timeout_s)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown; SIGKILL if it takes more than 30 s."""
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


class RedisServer(_FaultableServer):
    """A real ``redis-server`` on a free port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_program("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self.paused = False
        return self

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()


NEO4J_DIR = Path(__file__).parent / "neo4j-launcher"
NEO4J_JAR = NEO4J_DIR / "target" / "neo4j-launcher.jar"
NEO4J_CDS = NEO4J_DIR / "target" / "neo4j-launcher.jsa"
# Keep in step with NEO4J_JVM in the Makefile, or the class-data archive goes unused.
NEO4J_JVM_FLAGS = ["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


class Neo4jServer(_SlowStartServer):
    """A real Neo4j 5.26 community DBMS (``tests/neo4j-launcher``, built by ``make neo4j-launcher``)
    serving Bolt on a free loopback port, with authentication disabled (connect with
    ``auth=None``). Its store lives in ``workdir / "db"``, so :meth:`restart` (even after
    :meth:`kill`) brings the same data back on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.java = require_program("java")
        self.jar = require_file(NEO4J_JAR, "`make neo4j-launcher` builds it")
        self.workdir = workdir
        self.data_dir = workdir / "db"
        self.port = free_port()
        self.log_path = workdir / "neo4j.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.start_seconds = 0.0  # how long the last start took, until Bolt was ready

    @property
    def url(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = [self.java, *NEO4J_JVM_FLAGS]
        cds = NEO4J_CDS
        if cds.is_file() and cds.stat().st_mtime >= self.jar.stat().st_mtime:
            command.append(f"-XX:SharedArchiveFile={cds}")
        return [*command, "-jar", str(self.jar), str(self.port), str(self.data_dir)]

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def start(self, timeout_s: float = 90.0) -> Neo4jServer:
        """Start and wait for the launcher's READY line (the default database is available and
        Bolt accepts connections)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log)
        self.paused = False
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if any(line.startswith(b"READY ") for line in log):
                    self.start_seconds = time.monotonic() - began
                    wait_for_port(self.port)
                    return self
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"neo4j exited early:\n{self._log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"neo4j was not ready after {timeout_s} s:\n{self._log_tail()}")


class DenisProcess:
    """``python -m denis serve`` as a real process, with its own environment."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "DENIS_DATA_DIR": str(data_dir),
            "DENIS_PORT": str(self.port),
            "DENIS_HOST": "127.0.0.1",
            "DENIS_LOG_LEVEL": "WARNING",
            # Several API processes share one data dir in the tests; the embedded graph is
            # owned by one process, so each gets its own in memory (a test can override).
            "DENIS_GRAPH_EMBEDDED_PATH": ":memory:",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"denis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``WS /chat`` on this server."""
        return f"ws://127.0.0.1:{self.port}/chat"

    def command(self) -> list[str]:
        """What runs the server (the benchmarks' foundation server is another script)."""
        return [sys.executable, "-m", "denis", "serve"]

    def start(self, timeout_s: float = 20.0) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"denis exited early:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=0.5).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"denis did not become ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def create_token(data_dir: Path, user: str, *, admin: bool = False) -> str:
    from denis.sync_plane import TokenStore  # noqa: PLC0415

    return TokenStore(data_dir).create(user, admin=admin)


class DenisWorker:
    """``python -m denis worker`` as a real process group (prefork parent and children), so a
    crash can be caused with one SIGKILL to the whole group."""

    def __init__(
        self,
        data_dir: Path,
        queues: str,
        env: dict[str, str] | None = None,
        *,
        concurrency: int = 1,
        beat: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.queues = queues
        self.concurrency = concurrency
        self.beat = beat
        self.env = {
            **os.environ,
            "DENIS_DATA_DIR": str(data_dir),
            "DENIS_LOG_LEVEL": "WARNING",
            "DENIS_WORKER_HEARTBEAT_S": "0.5",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"worker-{queues.replace(',', '+')}.log"

    def start(self, timeout_s: float = 30.0) -> DenisWorker:
        """Start and wait until its heartbeat says it consumes its queues."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "denis", "worker", "--queues", self.queues]
        args += ["--concurrency", str(self.concurrency)] + (["--beat"] if self.beat else [])
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        beat_file = self.data_dir / "workers"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            if any(self._is_mine(path) for path in beat_file.glob("*.json")):
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"worker did not start:\n{self.log_path.read_text()[-3000:]}")

    def _is_mine(self, path: Path) -> bool:
        try:
            return int(json.loads(path.read_text())["pid"]) == (self.proc.pid if self.proc else -1)
        except (OSError, ValueError, KeyError):
            return False

    def kill(self) -> None:
        """SIGKILL the whole group: parent and prefork children die mid-job, as in a crash."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM: Celery's warm shutdown."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


# -- Home Assistant ----------------------------------------------------------------------------

HA_VERSION = "2025.4.4"
TEST_CACHE = Path(os.environ.get("DENIS_TEST_CACHE") or Path.home() / ".cache" / "denis-tests")
# Keep in step with scripts/install-test-deps.sh, which builds this virtual environment (Home
# Assistant needs a newer Python than Denis, so it lives apart) and marks it ``.ready``.
HA_VENV = TEST_CACHE / f"ha-{HA_VERSION}"
HA_CONFIG = """\
homeassistant:
  name: Denis test home
  latitude: 40.4
  longitude: -3.7
  elevation: 600
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: ES
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
websocket_api:
onboarding:
demo:
"""


def require_home_assistant() -> Path:
    python = HA_VENV / "bin" / "python"
    if not (HA_VENV / ".ready").is_file() or not python.exists():
        missing_component(
            f"Home Assistant {HA_VERSION} is not installed at {HA_VENV} "
            "(scripts/install-test-deps.sh installs it)"
        )
    return python


@dataclass(frozen=True, slots=True)
class HomeAssistantSeed:
    """An onboarded ``.storage`` (one user, one long-lived token) to start more instances from
    without onboarding each (the token stays valid: its signing key is in the copy)."""

    storage: Path
    token: str


class HomeAssistantServer(_SlowStartServer):
    """A real Home Assistant (PyPI, its own virtual environment, ``--skip-pip``) with the
    ``demo`` integration (lights, locks, covers, climates, media players) on a free loopback
    port. Started from a ``seed``, it is ready in seconds; without one it onboards itself
    (creates the owner and a long-lived token) and :meth:`seed` can be taken from it."""

    def __init__(self, workdir: Path, seed: HomeAssistantSeed | None = None) -> None:
        self.python = require_home_assistant()
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.port = free_port()
        self.log_path = workdir / "home-assistant.log"
        self.token = seed.token if seed else ""
        self._seed = seed
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.start_seconds = 0.0  # how long the last start took, until the demo was loaded

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> HomeAssistantServer:
        began = time.monotonic()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(HA_CONFIG.format(port=self.port))
        storage = self.config_dir / ".storage"
        if self._seed is not None and not storage.exists():
            shutil.copytree(self._seed.storage, storage)
        command = [str(self.python), "-m", "homeassistant", "--config", str(self.config_dir)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--skip-pip", "--log-no-color"], stdout=log, stderr=log
            )
        self.paused = False
        deadline = began + timeout_s
        try:
            if not self.token:
                self._wait(deadline, lambda: self._get("/api/onboarding", auth=False))
                self.token = _onboard(self.url)
            self._wait(deadline, self._running)
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def seed(self, path: Path, timeout_s: float = 10.0) -> HomeAssistantSeed:
        """Copy this instance's ``.storage`` once its token is saved there (Home Assistant
        saves it a moment after creating it; a copy taken earlier would not know the token)."""
        token_id = _token_id(self.token)
        auth = self.config_dir / ".storage" / "auth"
        deadline = time.monotonic() + timeout_s
        while not (auth.is_file() and token_id in auth.read_text()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Home Assistant did not save its token in {timeout_s} s")
            time.sleep(0.1)
        shutil.copytree(self.config_dir / ".storage", path)
        return HomeAssistantSeed(path, self.token)

    def _get(self, path: str, *, auth: bool = True) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=2.0)

    def _running(self) -> bool:
        response = self._get("/api/config")
        return response.status_code == 200 and response.json().get("state") == "RUNNING"

    def _wait(self, deadline: float, ready: Callable[[], object]) -> None:
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited early:\n{self._log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                answer = ready()
                if answer is True or getattr(answer, "status_code", 0) == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"Home Assistant was not ready in time:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _onboard(url: str) -> str:
    """Create the owner through onboarding, then a long-lived token over the WebSocket API."""
    client_id = f"{url}/"
    user = {"client_id": client_id, "name": "Denis", "username": "denis", "language": "en"}
    answer = httpx.post(f"{url}/api/onboarding/users", json={**user, "password": "denis-test"})
    answer.raise_for_status()
    grant = {"grant_type": "authorization_code", "code": answer.json()["auth_code"]}
    answer = httpx.post(f"{url}/auth/token", data={**grant, "client_id": client_id})
    answer.raise_for_status()
    access_token = answer.json()["access_token"]
    request = {"client_name": "denis-tests", "lifespan": 3650}
    return str(ws_command(url, access_token, "auth/long_lived_access_token", **request))


def ws_command(url: str, token: str, command: str, **fields: object) -> object:
    """One command over Home Assistant's WebSocket API (e.g. ``config/entity_registry/update``);
    its ``result``, or ``RuntimeError`` if it failed."""
    from websockets.sync.client import connect  # noqa: PLC0415

    with connect(f"ws{url.removeprefix('http')}/api/websocket", open_timeout=5) as ws:
        json.loads(ws.recv(timeout=5))  # auth_required
        ws.send(json.dumps({"type": "auth", "access_token": token}))
        if json.loads(ws.recv(timeout=5)).get("type") != "auth_ok":
            raise RuntimeError("Home Assistant refused the token")
        ws.send(json.dumps({"id": 1, "type": command, **fields}))
        answer = json.loads(ws.recv(timeout=5))
    if not answer.get("success"):
        raise RuntimeError(f"{command} failed: {answer}")
    return answer.get("result")


def _token_id(token: str) -> str:
    """The refresh token id a Home Assistant access token (a JWT) was issued for."""
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"])
