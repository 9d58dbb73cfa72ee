"""Builds the FastAPI application around services opened by ``denis.app``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from denis.api import audio, chat, jobs, ops, telemetry, websocket
from denis.api.edge import DenisApi
from denis.api.errors import install_error_handlers
from denis.api.openapi import install_openapi
from denis.api.services import Services

__all__ = ["build_api"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def build_api(open_services: Callable[[], AbstractAsyncContextManager[Services]]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services() as services:
            app.state.services = services
            try:
                yield
            finally:
                app.state.services = None

    app = DenisApi(
        title="Denis",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # every endpoint but /, /static, /audio, /healthz, /readyz needs a token
    )
    app.state.services = None
    install_error_handlers(app)
    install_openapi(app)  # not served; the fuzz tests build it with app.openapi()
    app.include_router(chat.router)
    app.include_router(websocket.router)
    app.include_router(ops.router)
    app.include_router(jobs.router)
    app.include_router(audio.router)
    app.include_router(telemetry.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app  # its edge middlewares (trace, security) wrap every request: denis.api.edge
