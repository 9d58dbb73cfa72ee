"""Real servers for the tests: started as subprocesses on free loopback ports, then killed,
paused (SIGSTOP) or restarted to cause the faults the design talks about.

A missing program fails the test under ``CI=true`` and skips it (with the reason) elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed (scripts/install-test-deps.sh installs it)")
    return path


def require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        _missing(f"{path} is missing ({hint})")
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


class Neo4jServer(_FaultableServer):
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

    def restart(self, timeout_s: float = 90.0) -> None:
        """Kill, then start again on the same port and data dir."""
        self.kill()
        self.start(timeout_s)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (checkpoint); SIGKILL if it takes more than 30 s."""
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

    def start(self, timeout_s: float = 20.0) -> DenisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "denis", "serve"], env=self.env, stdout=log, stderr=log
            )
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
