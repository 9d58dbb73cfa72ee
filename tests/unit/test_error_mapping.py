"""Every ``DenisError`` maps to the HTTP status DESIGN.md gives its code, never to a 500.

Classes are discovered through ``__subclasses__``, so a class added to ``denis.errors`` is
covered here without touching this file.
"""

from __future__ import annotations

import inspect
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import denis.app  # noqa: F401 - loads every zone, so every error class is discovered
from denis import errors as e
from denis.api.errors import close_code_for, error_response, status_for

# DESIGN.md "Interfaces / HTTP": the error codes and their statuses (forbidden and not_found
# are the remaining codes of the error tree).
DESIGN_STATUS = {
    "unauthorized": 401,
    "budget_exceeded": 403,
    "injection_blocked": 403,
    "forbidden": 403,
    "not_found": 404,
    "timeout": 408,
    "too_large": 413,
    "invalid_input": 422,
    "rate_limited": 429,
    "unavailable": 503,
    "hop_limit": 508,
}
# Bases that only group others; Denis never raises them itself.
GROUPING_BASES = {e.DenisError, e.RejectedError, e.GateClosedError}


def all_subclasses(cls: type[e.DenisError]) -> list[type[e.DenisError]]:
    found: list[type[e.DenisError]] = []
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("denis."):
            found.append(sub)
            found.extend(all_subclasses(sub))
    return list(dict.fromkeys(found))


def build(cls: type[e.DenisError], **kwargs: object) -> e.DenisError:
    """An instance of any error class, whatever extra keyword arguments it requires."""
    for name, param in inspect.signature(cls).parameters.items():
        if name not in kwargs and name != "detail" and param.default is inspect.Parameter.empty:
            kwargs[name] = "redis" if name == "dependency" else "x"
    return cls("something went wrong", **kwargs)


ERROR_CLASSES = all_subclasses(e.DenisError)
CONCRETE = [cls for cls in ERROR_CLASSES if cls not in GROUPING_BASES]


def test_discovery_finds_the_whole_tree() -> None:
    in_errors_module = [cls for cls in ERROR_CLASSES if cls.__module__ == "denis.errors"]
    assert set(e.__all__) == {cls.__name__ for cls in [e.DenisError, *in_errors_module]}
    assert any(cls.__module__.startswith("denis.assistant") for cls in ERROR_CLASSES)
    assert len(CONCRETE) >= 13


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda cls: cls.__name__)
def test_every_concrete_error_has_a_design_code_and_its_status(cls: type[e.DenisError]) -> None:
    exc = build(cls)
    assert exc.code in DESIGN_STATUS, f"{cls.__name__}.code {exc.code!r} is not in DESIGN.md"
    assert status_for(exc) == DESIGN_STATUS[exc.code]


@pytest.mark.parametrize("cls", [e.DenisError, *ERROR_CLASSES], ids=lambda cls: cls.__name__)
def test_no_error_class_maps_to_500(cls: type[e.DenisError]) -> None:
    status = status_for(build(cls))
    assert status != 500
    assert 400 <= status <= 599


def test_every_design_code_is_produced_by_some_class() -> None:
    assert {build(cls).code for cls in CONCRETE} == set(DESIGN_STATUS)


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (e.UnauthorizedError, 401),
        (e.BudgetExceededError, 403),
        (e.InjectionBlockedError, 403),
        (e.ForbiddenError, 403),
        (e.NotFoundError, 404),
        (e.DeadlineExceededError, 408),
        (e.TooLargeError, 413),
        (e.InvalidInputError, 422),
        (e.RateLimitedError, 429),
        (e.HopLimitError, 508),
        (e.BreakerOpenError, 503),
        (e.DependencyUnavailableError, 503),
    ],
)
def test_design_table_spelled_out(cls: type[e.DenisError], status: int) -> None:
    assert status_for(build(cls)) == status


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda cls: cls.__name__)
def test_error_response_body_is_code_and_detail_only(cls: type[e.DenisError]) -> None:
    exc = build(cls)
    response = error_response(exc)
    assert response.status_code == status_for(exc)
    assert json.loads(response.body) == {
        "error": {"code": exc.code, "detail": "something went wrong"}
    }
    if exc.retry_after_s is None:
        assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(0.0, "1"), (0.001, "1"), (0.999, "1"), (1.0, "1"), (1.2, "2"), (7.0, "7"), (59.5, "60")],
)
@pytest.mark.parametrize(
    "cls",
    [e.RateLimitedError, e.DeadlineExceededError, e.BreakerOpenError],
    ids=lambda cls: cls.__name__,
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(
    cls: type[e.DenisError], retry_after_s: float, header: str
) -> None:
    response = error_response(build(cls, retry_after_s=retry_after_s))
    assert response.headers["retry-after"] == header


@given(st.floats(min_value=0.0, max_value=1e7))
def test_retry_after_never_promises_too_early(retry_after_s: float) -> None:
    response = error_response(e.RateLimitedError("slow down", retry_after_s=retry_after_s))
    seconds = int(response.headers["retry-after"])
    assert str(seconds) == response.headers["retry-after"]
    assert seconds >= 1
    assert seconds >= retry_after_s
    assert seconds < max(retry_after_s, 1.0) + 1


def test_dependency_errors_carry_a_retry_hint_by_default() -> None:
    response = error_response(e.DependencyUnavailableError("redis timed out", dependency="redis"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_unauthorized_asks_for_a_bearer_token() -> None:
    response = error_response(e.UnauthorizedError("no token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda cls: cls.__name__)
def test_websocket_close_codes(cls: type[e.DenisError]) -> None:
    """Auth and hop errors end a socket as policy (1008), dependency errors as try-again
    (1013); everything else is answered in-band."""
    expected = {e.UnauthorizedError: 1008, e.HopLimitError: 1008}.get(cls)
    if issubclass(cls, e.DependencyError):
        expected = 1013
    assert close_code_for(build(cls)) == expected
