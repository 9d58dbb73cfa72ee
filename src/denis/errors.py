"""The whole Denis error tree, in one place.

Every error carries a stable machine-readable ``code``; ``denis.api.errors`` is the only place
that turns them into HTTP statuses and WebSocket close codes. Vendor exceptions (redis, limits,
...) are translated into this tree at the edge of the zone that uses the vendor, with
``raise ... from exc``, so none leak upward::

    DenisError                          code
    ├── DependencyError                 unavailable   a dependency cannot serve now
    │   ├── BreakerOpenError            unavailable   its circuit breaker is open
    │   ├── DependencyUnavailableError  unavailable   it failed or timed out
    │   └── QueueFullError              unavailable   background work refused (queue disk full)
    ├── RejectedError                                 Denis refuses the request, on purpose
    │   ├── UnauthorizedError           unauthorized
    │   ├── ForbiddenError              forbidden     authenticated, but not allowed
    │   ├── RateLimitedError            rate_limited  (retry_after_s)
    │   ├── HopLimitError               hop_limit
    │   ├── DeadlineExceededError       timeout       (retry_after_s)
    │   └── GateClosedError
    │       ├── BudgetExceededError     budget_exceeded
    │       └── InjectionBlockedError   injection_blocked
    └── InvalidInputError               invalid_input
        ├── TooLargeError               too_large
        └── NotFoundError               not_found
"""

from __future__ import annotations

__all__ = [
    "BreakerOpenError",
    "BudgetExceededError",
    "DeadlineExceededError",
    "DenisError",
    "DependencyError",
    "DependencyUnavailableError",
    "ForbiddenError",
    "GateClosedError",
    "HopLimitError",
    "InjectionBlockedError",
    "InvalidInputError",
    "NotFoundError",
    "QueueFullError",
    "RateLimitedError",
    "RejectedError",
    "TooLargeError",
    "UnauthorizedError",
]


class DenisError(Exception):
    """Base of every error Denis raises on purpose."""

    code = "internal"

    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class DependencyError(DenisError):
    """A dependency (Redis, a worker, the graph, ...) cannot serve right now."""

    code = "unavailable"

    def __init__(self, detail: str, *, dependency: str, retry_after_s: float | None = 1.0) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)
        self.dependency = dependency


class BreakerOpenError(DependencyError):
    """The dependency's circuit breaker is open: it is not even tried."""


class DependencyUnavailableError(DependencyError):
    """The dependency failed or timed out on this call."""


class QueueFullError(DependencyError):
    """The queue's disk is over its threshold: background work is refused, not queued."""


class RejectedError(DenisError):
    """Denis refuses the request on purpose; the reason is in ``detail``."""


class UnauthorizedError(RejectedError):
    code = "unauthorized"


class ForbiddenError(RejectedError):
    code = "forbidden"


class RateLimitedError(RejectedError):
    code = "rate_limited"


class HopLimitError(RejectedError):
    code = "hop_limit"


class DeadlineExceededError(RejectedError):
    code = "timeout"


class GateClosedError(RejectedError):
    """A gate on the request path closed for this request."""


class BudgetExceededError(GateClosedError):
    code = "budget_exceeded"


class InjectionBlockedError(GateClosedError):
    code = "injection_blocked"


class InvalidInputError(DenisError):
    code = "invalid_input"


class TooLargeError(InvalidInputError):
    code = "too_large"


class NotFoundError(InvalidInputError):
    code = "not_found"
