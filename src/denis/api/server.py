"""Runs the ASGI app under uvicorn with Denis's limits: WebSocket frame size, request line and
headers (``http_limits``: 431 past 64 KiB), keep-alive and graceful shutdown, and Denis's
HTTP protocol (``http_protocol``: a response's head and body in one write)."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from denis.api.http_protocol import DenisHttpTools
from denis.settings import ApiSettings

__all__ = ["serve"]


class _NoFrameDumps(logging.Filter):
    """uvicorn hands its ``uvicorn.error`` logger to the websockets library, which logs every
    frame's content at DEBUG: auth tokens and what users say. Those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG or "websockets" not in record.pathname


def serve(app: FastAPI, settings: ApiSettings) -> None:
    logging.getLogger("uvicorn.error").addFilter(_NoFrameDumps())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=DenisHttpTools,
        ws_max_size=settings.ws_max_frame_bytes,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
    )
    uvicorn.Server(config).run()
