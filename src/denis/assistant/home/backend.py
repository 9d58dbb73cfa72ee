"""The home backend interface the tools use.

Backends are synchronous: tools run them inside job functions, on a worker or on the API's
inline pool, never on the event loop. Every call is bounded by the backend's own timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from denis.errors import DependencyUnavailableError, NotFoundError

__all__ = ["ACTIONS", "DeviceState", "HomeBackend", "HomeUnavailableError", "UnknownDeviceError"]

# What a tool may ask a device to do; ``data`` carries ``brightness`` (0-100) or
# ``temperature`` (degrees) where the action needs one.
ACTIONS = frozenset(
    {"turn_on", "turn_off", "set_brightness", "set_temperature", "open", "close", "lock", "unlock"}
)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One entity's state, Home Assistant's way: ``state`` is ``on``/``off``, ``open``/
    ``closed``, ``locked``/``unlocked``, or a number as text for a sensor; ``attributes`` holds
    ``brightness`` (0-100), ``temperature``, ``current_temperature``, ``unit_of_measurement``,
    ``friendly_name`` where they apply."""

    entity_id: str
    state: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"entity_id": self.entity_id, "state": self.state, "attributes": self.attributes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceState:
        return cls(str(data["entity_id"]), str(data["state"]), dict(data.get("attributes") or {}))


class HomeUnavailableError(DependencyUnavailableError):
    """The home cannot be reached (Home Assistant down, hung, refusing, or its breaker open)."""

    def __init__(self, detail: str, *, retry_after_s: float | None = 5.0) -> None:
        super().__init__(detail, dependency="home", retry_after_s=retry_after_s)


class UnknownDeviceError(NotFoundError):
    """No such entity in this home."""


class HomeBackend(Protocol):
    name: str  # "demo" | "home_assistant"

    def get_state(self, entity_id: str) -> DeviceState: ...

    def call(self, entity_id: str, action: str, data: dict[str, Any]) -> DeviceState:
        """Do ``action`` (one of ``ACTIONS``) and return the entity's state afterwards."""
        ...

    def close(self) -> None: ...
