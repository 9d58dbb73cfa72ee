"""Runs the ASGI app under uvicorn with Denis's limits (frame size, graceful shutdown)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from denis.settings import ApiSettings

__all__ = ["serve"]


def serve(app: FastAPI, settings: ApiSettings) -> None:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.ws_max_frame_bytes,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
    )
    uvicorn.Server(config).run()
