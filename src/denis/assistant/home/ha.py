"""Home Assistant over its REST API (``/api/states``, ``/api/services``, ``/api/template``).

Owns: the mapping from Denis's actions to Home Assistant services, from Home Assistant's states
to ``DeviceState`` (brightness 0-255 there, 0-100 here), and from its answers to Denis's errors,
translated here so no ``httpx`` error leaks::

    connect error, timeout, 5xx, breaker open   HomeUnavailableError
    500 to a command                            HomeCommandFailedError (a HomeUnavailableError,
                                                not counted against the breaker)
    401 / 403                                   HomeUnavailableError ("token rejected")
    404                                         UnknownDeviceError
    400                                         InvalidInputError

How it degrades: every call is bounded by ``timeout_s`` in all (a command is two requests, the
service call then the state read, sharing one deadline); there are no retries (a device command
must not be doubled: the job layer decides); a circuit breaker, when given, fails calls at once
while Home Assistant is down and lets one probe through after its cool-down. Losing and finding
Home Assistant again is logged once each, never once per call.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import structlog

from denis.assistant.home.actions import DOMAIN_ACTIONS, check_action, domain_of
from denis.assistant.home.backend import DeviceState, HomeUnavailableError, UnknownDeviceError
from denis.assistant.home.ha_import import import_home
from denis.errors import InvalidInputError
from denis.graph.model import HomeGraph
from denis.resilience import CircuitBreaker, Permit

__all__ = ["HomeAssistant", "HomeCommandFailedError", "from_ha_state", "service_for"]

_log = structlog.get_logger("denis.assistant")

# Attributes Denis reads; the rest of Home Assistant's (icons, feature bits, ...) stay there.
_ATTRIBUTES = (
    "friendly_name",
    "temperature",
    "current_temperature",
    "unit_of_measurement",
    "device_class",
)
_ENTITY_ID = re.compile(r"(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)")
_SERVICES = {
    "open": "open_cover",
    "close": "close_cover",
    "lock": "lock",
    "unlock": "unlock",
    "set_temperature": "set_temperature",
    "set_brightness": "turn_on",
    "turn_on": "turn_on",
    "turn_off": "turn_off",
}


def service_for(entity_id: str, action: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The ``domain/service`` path and body for an action (checked to fit the domain)."""
    body: dict[str, Any] = {"entity_id": entity_id}
    if action == "set_brightness":
        body["brightness_pct"] = data["brightness"]
    elif action == "set_temperature":
        body["temperature"] = data["temperature"]
    return f"{domain_of(entity_id)}/{_SERVICES[action]}", body


def from_ha_state(raw: dict[str, Any]) -> DeviceState:
    """Home Assistant's state object as Denis's ``DeviceState``."""
    entity_id = str(raw["entity_id"])
    ha_attributes: dict[str, Any] = raw.get("attributes") or {}
    attributes = {key: ha_attributes[key] for key in _ATTRIBUTES if key in ha_attributes}
    if domain_of(entity_id) == "light":
        brightness = ha_attributes.get("brightness")
        attributes["brightness"] = max(1, round(brightness * 100 / 255)) if brightness else 0
    return DeviceState(entity_id, str(raw["state"]), attributes)


class HomeCommandFailedError(HomeUnavailableError):
    """Home Assistant answered, but failed to carry the command out (HTTP 500: e.g. a media
    player that cannot play what it was given). Not counted against the breaker."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after_s=None)


class HomeAssistant:
    """A ``HomeBackend`` on a Home Assistant instance (``url`` without ``/api``)."""

    name = "home_assistant"

    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = 5.0,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.breaker = breaker
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
        )
        self._down = False

    # -- HomeBackend ---------------------------------------------------------------------

    def get_state(self, entity_id: str) -> DeviceState:
        _check_entity_id(entity_id)
        return self._state(entity_id, time.monotonic() + self.timeout_s)

    def call(self, entity_id: str, action: str, data: dict[str, Any]) -> DeviceState:
        _check_entity_id(entity_id)
        checked = check_action(entity_id, action, data)
        deadline = time.monotonic() + self.timeout_s
        if action == "set_temperature":  # out of its range, Home Assistant answers 500
            raw = self._json("GET", f"/api/states/{entity_id}", deadline, entity_id=entity_id)
            _check_range(entity_id, checked["temperature"], raw.get("attributes") or {})
        path, body = service_for(entity_id, action, checked)
        self._send("POST", f"/api/services/{path}", deadline, body, entity_id)
        # The service's answer lists states changed meanwhile, transitional ones included
        # ("unlocking"): the state read afterwards is the one to report.
        return self._state(entity_id, deadline)

    def close(self) -> None:
        self._client.close()

    # -- beyond the protocol -------------------------------------------------------------

    def ping(self) -> None:
        """Raise ``HomeUnavailableError`` unless the API answers (``GET /api/``)."""
        self._json("GET", "/api/", time.monotonic() + self.timeout_s)

    def play_media(self, entity_id: str, url: str, content_type: str = "music") -> None:
        """Ask a media player to play ``url`` (``media_player.play_media``)."""
        _check_entity_id(entity_id)
        if domain_of(entity_id) != "media_player":
            raise InvalidInputError(f"{entity_id} is not a media player")
        deadline = time.monotonic() + self.timeout_s
        body = {"entity_id": entity_id, "media_content_id": url, "media_content_type": content_type}
        try:
            self._send("POST", "/api/services/media_player/play_media", deadline, body, entity_id)
        except HomeCommandFailedError as exc:  # what a player that cannot play media answers
            raise HomeCommandFailedError(
                f"{entity_id} could not play {url} (it may not support playing media): {exc.detail}"
            ) from exc

    def import_home(self) -> HomeGraph:
        """Areas and the devices Denis can use, as a ``HomeGraph`` without routes or policies
        (the caller merges those from its default home)."""
        deadline = time.monotonic() + self.timeout_s
        states = self._json("GET", "/api/states", deadline)
        areas = self._text("POST", "/api/template", deadline, {"template": _AREAS_TEMPLATE})
        return import_home(states, areas, set(DOMAIN_ACTIONS))

    # -- internals -----------------------------------------------------------------------

    def _state(self, entity_id: str, deadline: float) -> DeviceState:
        raw = self._json("GET", f"/api/states/{entity_id}", deadline, entity_id=entity_id)
        return from_ha_state(raw)

    def _json(
        self,
        method: str,
        path: str,
        deadline: float,
        body: dict[str, Any] | None = None,
        entity_id: str | None = None,
    ) -> Any:
        response = self._send(method, path, deadline, body, entity_id)
        try:
            return response.json()
        except ValueError as exc:
            raise HomeUnavailableError(
                "Home Assistant answered something that is not JSON"
            ) from exc

    def _text(self, method: str, path: str, deadline: float, body: dict[str, Any]) -> str:
        return self._send(method, path, deadline, body, None).text

    def _send(
        self,
        method: str,
        path: str,
        deadline: float,
        body: dict[str, Any] | None,
        entity_id: str | None,
    ) -> httpx.Response:
        """One request under the breaker and what is left of the deadline; errors translated."""
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise HomeUnavailableError(f"Home Assistant did not answer within {self.timeout_s:g} s")
        permit = self.breaker.try_acquire() if self.breaker is not None else None
        if self.breaker is not None and permit is None:
            raise HomeUnavailableError(
                "Home Assistant is unavailable (circuit open)",
                retry_after_s=max(self.breaker.retry_after_s(), 1.0),
            )
        try:
            response = self._client.request(
                method, path, json=body, timeout=httpx.Timeout(remaining_s)
            )
            error = _error_for(response, entity_id, command=path.startswith("/api/services/"))
        except httpx.TimeoutException as exc:
            error = HomeUnavailableError(
                f"Home Assistant did not answer within {self.timeout_s:g} s"
            )
            error.__cause__ = exc
        except httpx.HTTPError as exc:
            error = HomeUnavailableError(f"cannot reach Home Assistant at {self.url}: {exc}")
            error.__cause__ = exc
        except BaseException:
            if self.breaker is not None and permit is not None:
                self.breaker.release(permit)
            raise
        self._verdict(permit, error)
        if error is not None:
            raise error
        return response

    def _verdict(self, permit: Permit | None, error: Exception | None) -> None:
        # A command Home Assistant failed to carry out (HTTP 500) is not Home Assistant down.
        failed = isinstance(error, HomeUnavailableError) and not isinstance(
            error, HomeCommandFailedError
        )
        if self.breaker is not None and permit is not None:
            if failed:
                self.breaker.record_failure(permit)
            else:
                self.breaker.record_success(permit)
        if failed and not self._down:
            self._down = True
            _log.warning("home.unavailable", url=self.url, error=str(error))
        elif not failed and self._down:
            self._down = False
            _log.info("home.recovered", url=self.url)


def _error_for(
    response: httpx.Response, entity_id: str | None, *, command: bool
) -> Exception | None:
    status = response.status_code
    if status < 300:
        return None
    message = _message(response)
    if status in {401, 403}:
        return HomeUnavailableError(
            f"Home Assistant rejected the token (HTTP {status}): check DENIS_HA_TOKEN"
        )
    if status == 404:
        what = f"no entity {entity_id!r}" if entity_id else "not found"
        return UnknownDeviceError(f"Home Assistant has {what}")
    if status == 400:
        return InvalidInputError(f"Home Assistant refused the request: {message}")
    if status == 500 and command:
        return HomeCommandFailedError(f"Home Assistant failed to do it (HTTP 500): {message}")
    return HomeUnavailableError(f"Home Assistant failed (HTTP {status}): {message}")


def _check_entity_id(entity_id: str) -> None:
    """Home Assistant's own rule for entity ids; anything else cannot exist (and must not
    reach a URL path)."""
    if not _ENTITY_ID.fullmatch(entity_id):
        raise UnknownDeviceError(f"{entity_id!r} is not an entity id")


def _check_range(entity_id: str, temperature: float, attributes: dict[str, Any]) -> None:
    low, high = attributes.get("min_temp"), attributes.get("max_temp")
    if (
        isinstance(low, int | float)
        and isinstance(high, int | float)
        and not low <= temperature <= high
    ):
        raise InvalidInputError(
            f"{entity_id} takes a temperature from {low:g} to {high:g}, not {temperature:g}"
        )


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])[:200]
    return str(data)[:200]


# One JSON list of {id, name, entities} for every area; renders on Home Assistant's side.
_AREAS_TEMPLATE = (
    "{% set ns = namespace(areas=[]) %}"
    "{% for a in areas() %}"
    "{% set ns.areas = ns.areas + [{'id': a, 'name': area_name(a), "
    "'entities': area_entities(a) | list}] %}"
    "{% endfor %}"
    "{{ ns.areas | tojson }}"
)
