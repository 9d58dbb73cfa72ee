"""The home Denis controls: one interface, two backends (the built-in demo home and Home
Assistant over its REST API)."""

from denis.assistant.home.backend import (
    ACTIONS,
    DeviceState,
    HomeBackend,
    HomeUnavailableError,
    UnknownDeviceError,
)

__all__ = ["ACTIONS", "DeviceState", "HomeBackend", "HomeUnavailableError", "UnknownDeviceError"]
