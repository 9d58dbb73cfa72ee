"""Dependency aliases: handlers ask for ``ServicesDep`` or ``PrincipalDep`` by type.

The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its
thread pool, a thread hop per request that cost more than the whole sync-plane pipeline
(``benchmarks/bench_pipeline.py``). None of them awaits anything. The two hot routes, ``POST
/chat`` and ``WS /chat``, call ``get_services`` and ``bearer_token`` directly instead: even an
``async`` sub-dependency cost ``/chat`` about 10 µs per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from denis.api.services import Services
from denis.errors import DependencyUnavailableError, ForbiddenError, UnauthorizedError
from denis.sync_plane import Principal

__all__ = ["AdminDep", "PrincipalDep", "ServicesDep", "bearer_token", "get_services"]


def get_services(conn: HTTPConnection) -> Services:
    services: Services | None = getattr(conn.app.state, "services", None)
    if services is None:
        raise DependencyUnavailableError(
            "Denis is starting; try again in a moment", dependency="api"
        )
    return services


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def _services(conn: HTTPConnection) -> Services:
    return get_services(conn)


async def get_principal(request: Request) -> Principal:
    services = get_services(request)
    token = bearer_token(request)
    if token is None:
        raise UnauthorizedError("a valid bearer token is required")
    return services.tokens.authenticate(token)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.admin:
        raise ForbiddenError("this needs an admin token")
    return principal


ServicesDep = Annotated[Services, Depends(_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(get_admin)]
