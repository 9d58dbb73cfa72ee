"""The built-in demo home: the embedded default when no Home Assistant is configured.

Its devices come from the graph's home (``denis.graph.model.Device``); their states live in one
SQLite file, ``<data_dir>/demo_home.sqlite`` (WAL, busy timeout), so they survive restarts and
are shared by every process on the host that runs tools (the API's inline pool, the workers).
Each call is one short transaction: a read-modify-write under ``BEGIN IMMEDIATE``, so two
processes switching the same light lose nothing. A device first seen is seeded (lights off,
covers closed, locks locked, the thermostat at 21, the sensor at 21.5 °C); a device known before
keeps its state.

How it degrades: a locked or broken database file is ``HomeUnavailableError`` (the home's own
"dependency down"), never a hang longer than the busy timeout.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import structlog

from denis.assistant.home.actions import check_action, domain_of
from denis.assistant.home.backend import DeviceState, HomeUnavailableError, UnknownDeviceError
from denis.graph.model import Device
from denis.resilience import prepare_sqlite, transaction

__all__ = ["DemoHome"]

_log = structlog.get_logger("denis.assistant")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    entity_id TEXT PRIMARY KEY, state TEXT NOT NULL, attributes TEXT NOT NULL
)
"""

FILE_NAME = "demo_home.sqlite"


def seed_state(device: Device) -> DeviceState:
    """A device's state the first time the demo home sees it."""
    attributes: dict[str, Any] = {"friendly_name": device.name}
    state = "off"
    if device.domain == "light":
        attributes["brightness"] = 0
    elif device.domain == "sensor":
        state = "21.5"
        attributes |= {"unit_of_measurement": "°C", "device_class": "temperature"}
    elif device.domain == "climate":
        state = "heat"
        attributes |= {"temperature": 21.0, "current_temperature": 20.5}
    elif device.domain == "cover":
        state = "closed"
    elif device.domain == "lock":
        state = "locked"
    return DeviceState(device.id, state, attributes)


def apply(current: DeviceState, action: str, data: dict[str, Any]) -> DeviceState:
    """The state after ``action`` (already checked to fit the device's domain)."""
    attributes = dict(current.attributes)
    state = current.state
    if action == "turn_on":
        state = "on"
        if domain_of(current.entity_id) == "light" and not attributes.get("brightness"):
            attributes["brightness"] = 100
    elif action == "turn_off":
        state = "off"
        if "brightness" in attributes:
            attributes["brightness"] = 0
    elif action == "set_brightness":
        attributes["brightness"] = data["brightness"]
        state = "on" if data["brightness"] > 0 else "off"
    elif action == "set_temperature":
        attributes["temperature"] = data["temperature"]
    else:  # open, close, lock, unlock: the state's name is the action's past participle
        state = {"open": "open", "close": "closed", "lock": "locked", "unlock": "unlocked"}[action]
    return DeviceState(current.entity_id, state, attributes)


class DemoHome:
    """A ``HomeBackend`` whose devices are rows of a SQLite file in the data dir."""

    name = "demo"

    def __init__(
        self, data_dir: Path, devices: Sequence[Device] | None, *, busy_timeout_s: float = 2.0
    ) -> None:
        """``devices``: the home's devices (seeded if new; others are unknown), or None for
        every device already in the file (a worker's view: the API seeds the file)."""
        self.path = data_dir / FILE_NAME
        self._busy_timeout_s = busy_timeout_s
        self._known = None if devices is None else {device.id for device in devices}
        devices = devices or ()
        self._failing = False
        data_dir.mkdir(parents=True, exist_ok=True)
        seeds = [seed_state(device) for device in devices]
        try:
            prepare_sqlite(self.path, _SCHEMA, busy_timeout_s=busy_timeout_s)
        except sqlite3.Error as exc:
            _log.warning("home.demo_unavailable", error=str(exc), path=str(self.path))
            raise HomeUnavailableError(f"the demo home's state file failed: {exc}") from exc
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO devices (entity_id, state, attributes) VALUES (?, ?, ?)",
                [(s.entity_id, s.state, json.dumps(s.attributes)) for s in seeds],
            )

    def get_state(self, entity_id: str) -> DeviceState:
        self._check_known(entity_id)
        with self._tx(write=False) as db:
            return self._read(db, entity_id)

    def call(self, entity_id: str, action: str, data: dict[str, Any]) -> DeviceState:
        self._check_known(entity_id)
        checked = check_action(entity_id, action, data)
        with self._tx() as db:
            new = apply(self._read(db, entity_id), action, checked)
            db.execute(
                "UPDATE devices SET state = ?, attributes = ? WHERE entity_id = ?",
                (new.state, json.dumps(new.attributes), entity_id),
            )
        return new

    def close(self) -> None:
        """Nothing to close: every call opens and closes its own connection."""

    # -- internals -----------------------------------------------------------------------

    def _check_known(self, entity_id: str) -> None:
        if self._known is not None and entity_id not in self._known:
            raise UnknownDeviceError(f"no device {entity_id!r} in the demo home")

    @staticmethod
    def _read(db: sqlite3.Connection, entity_id: str) -> DeviceState:
        row = db.execute(
            "SELECT state, attributes FROM devices WHERE entity_id = ?", (entity_id,)
        ).fetchone()
        if row is None:  # known but not seeded: cannot happen unless the file was edited
            raise UnknownDeviceError(f"no device {entity_id!r} in the demo home")
        return DeviceState(entity_id, row[0], json.loads(row[1]))

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One short transaction on a fresh connection (safe across threads and processes);
        SQLite failures become ``HomeUnavailableError``, logged once per outage."""
        try:
            with closing(self._connect()) as db, transaction(db, write=write):
                yield db
        except sqlite3.Error as exc:
            if not self._failing:
                self._failing = True
                _log.warning("home.demo_unavailable", error=str(exc), path=str(self.path))
            raise HomeUnavailableError(f"the demo home's state file failed: {exc}") from exc
        if self._failing:
            self._failing = False
            _log.info("home.demo_recovered", path=str(self.path))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: set in the file by prepare_sqlite
        except BaseException:
            db.close()
            raise
        return db
