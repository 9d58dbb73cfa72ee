"""The ``X-Denis-Hop`` guard against loops between Denis's own parts.

Every internal hop (HTTP call, Celery job, retry) carries the count plus one; anything arriving
with a count above ``MAX_HOPS`` is refused before any work.
"""

from __future__ import annotations

from denis.errors import HopLimitError, InvalidInputError

__all__ = [
    "HOP_HEADER",
    "MAX_HOPS",
    "check_hops",
    "next_hop",
    "next_hop_headers",
    "parse_hop_header",
]

HOP_HEADER = "X-Denis-Hop"
MAX_HOPS = 3
_MAX_HEADER_CHARS = 8


def parse_hop_header(raw: str | None) -> int:
    """The hop count in a header value; absent means 0 (the request comes from outside)."""
    if raw is None:
        return 0
    value = raw.strip()
    if not value or len(value) > _MAX_HEADER_CHARS or not value.isascii() or not value.isdigit():
        raise InvalidInputError(f"{HOP_HEADER} must be a small non-negative integer")
    return int(value)


def check_hops(hops: int, max_hops: int = MAX_HOPS) -> int:
    if hops > max_hops:
        raise HopLimitError(
            f"refused: this request has already crossed {hops} internal hops (limit {max_hops})"
        )
    return hops


def next_hop(hops: int) -> int:
    """The count to put on an outgoing internal call made while handling ``hops``."""
    return hops + 1


def next_hop_headers(hops: int) -> dict[str, str]:
    return {HOP_HEADER: str(next_hop(hops))}
