"""The home Denis controls: one interface, two backends (the built-in demo home and Home
Assistant over its REST API)."""

from denis.assistant.home.backend import (
    ACTIONS,
    DeviceState,
    HomeBackend,
    HomeUnavailableError,
    UnknownDeviceError,
)
from denis.assistant.home.demo import DemoHome
from denis.assistant.home.ha import HomeAssistant, HomeCommandFailedError

__all__ = [
    "ACTIONS",
    "DemoHome",
    "DeviceState",
    "HomeAssistant",
    "HomeBackend",
    "HomeCommandFailedError",
    "HomeUnavailableError",
    "UnknownDeviceError",
]
