"""Operations endpoints: ``/status``, ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from denis.api.deps import PrincipalDep, ServicesDep

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process answers; touches no dependency."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    services = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse(
            {"error": {"code": "unavailable", "detail": "Denis is starting"}},
            503,
            headers={"Retry-After": "1"},
        )
    degraded = [name for name, zone in services.health.zones().items() if zone.degraded]
    return JSONResponse({"status": "ready", "degraded": degraded})


@router.get("/status")
async def status(services: ServicesDep, _: PrincipalDep) -> JSONResponse:
    return JSONResponse(services.health.snapshot())


@router.get("/metrics")
async def metrics(services: ServicesDep, _: PrincipalDep) -> Response:
    services.health.snapshot()  # refresh the zone gauges
    return Response(
        generate_latest(services.signals.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
