"""Structured JSON logs (structlog), with the request's trace id bound per request.

Configured once by the CLI's ``main()``; nothing configures logging at import time.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["bind_trace_id", "configure_logging", "new_trace_id"]


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def new_trace_id() -> str:
    import uuid  # noqa: PLC0415 - keeps this module's import cost at zero for the CLI

    return uuid.uuid4().hex


def bind_trace_id(trace_id: str) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(trace_id=trace_id)
