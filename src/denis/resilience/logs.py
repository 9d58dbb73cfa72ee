"""Structured JSON logs (structlog), with the request's trace id bound per request.

Configured once by the CLI's ``main()``; nothing configures logging at import time. Records
from the standard library (uvicorn's) go through the same JSON renderer, so an operator reads
one format.

The trace id lives in one ``ContextVar`` of its own, set once per request and added to a log
line by the ``add_trace_id`` processor only when a line is written. Binding it with
``structlog.contextvars`` instead cost every request about 3 µs (a context scan to clear, a
variable to bind) for log lines Denis mostly never writes: it logs state changes, not requests.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

import structlog

__all__ = [
    "add_trace_id",
    "bind_trace_id",
    "bound_trace_id",
    "configure_logging",
    "new_trace_id",
    "unbind_trace_id",
]

_trace_id: ContextVar[str | None] = ContextVar("denis_trace_id", default=None)


def add_trace_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor adding the bound trace id (if any) to a log line."""
    trace_id = _trace_id.get()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


_IDS_PER_DRAW = 256


class _TraceIds(threading.local):
    """Each thread's supply of trace ids: 256 at a time from one ``os.urandom`` call, so a
    request pays for a slice, not for a system call (a ``getrandom`` call took 3 to 5 µs of a
    busy server's event loop, by py-spy; ``benchmarks/RESULTS.md`` section 1)."""

    def __init__(self) -> None:
        self.ids: Iterator[str] = iter(())


_trace_ids = _TraceIds()


def _fresh_supply_after_fork() -> None:
    global _trace_ids  # noqa: PLW0603 - a forked child must not hand out its parent's ids
    _trace_ids = _TraceIds()


os.register_at_fork(after_in_child=_fresh_supply_after_fork)


def new_trace_id() -> str:
    """128 random bits as 32 hex digits, from the operating system's random source."""
    supply = _trace_ids
    for trace_id in supply.ids:
        return trace_id
    raw = os.urandom(16 * _IDS_PER_DRAW)
    supply.ids = ids = (raw[i : i + 16].hex() for i in range(0, len(raw), 16))
    return next(ids)


def bind_trace_id(trace_id: str) -> Token[str | None]:
    """Bind ``trace_id`` to this context's log lines; the token undoes it."""
    return _trace_id.set(trace_id)


def unbind_trace_id(token: Token[str | None]) -> None:
    _trace_id.reset(token)


def bound_trace_id() -> str | None:
    return _trace_id.get()
