"""Job endpoints (admin only): dispatch a job, and the dead letter's list, replay and purge."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from denis.api.body import invalid_fields, parse_json, read_body
from denis.api.deps import AdminDep, ServicesDep
from denis.errors import NotFoundError
from denis.resilience import HOP_HEADER, Deadline, check_hops, parse_hop_header

__all__ = ["router"]

router = APIRouter()


class JobRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    args: dict[str, Any] = Field(default_factory=dict)
    key: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[\w.:-]+$")
    wait: bool = True


@router.post("/jobs")
async def post_job(request: Request, services: ServicesDep, _: AdminDep) -> JSONResponse:
    hops = check_hops(parse_hop_header(request.headers.get(HOP_HEADER)))
    deadline = Deadline.start(services.clock, services.settings.chat_timeout_s)
    raw = await read_body(request, services.settings.max_body_bytes, deadline)
    try:
        job = JobRequest.model_validate(parse_json(raw))
    except ValidationError as exc:
        raise invalid_fields(exc) from exc
    outcome = await services.jobs.dispatcher.submit(
        job.name, job.args, deadline=deadline, hops=hops, key=job.key, wait=job.wait
    )
    return JSONResponse(dataclasses.asdict(outcome))


@router.get("/admin/dlq")
async def list_dead_letters(services: ServicesDep, _: AdminDep) -> JSONResponse:
    letters = services.jobs.dead_letters()
    return JSONResponse({"dead_letters": [dataclasses.asdict(letter) for letter in letters]})


@router.post("/admin/dlq/replay")
async def replay_all(services: ServicesDep, _: AdminDep) -> JSONResponse:
    deadline = Deadline.start(services.clock, services.settings.chat_timeout_s)
    return JSONResponse({"replayed": await services.jobs.replay_all(deadline)})


@router.post("/admin/dlq/{key}/replay")
async def replay_one(key: str, services: ServicesDep, _: AdminDep) -> JSONResponse:
    deadline = Deadline.start(services.clock, services.settings.chat_timeout_s)
    replayed = await services.jobs.replay(key, deadline)
    if replayed is None:
        raise NotFoundError(f"no dead letter with key {key!r}")
    return JSONResponse({"replayed": [replayed]})


@router.delete("/admin/dlq")
async def purge(services: ServicesDep, _: AdminDep) -> JSONResponse:
    return JSONResponse({"purged": await services.jobs.purge()})
