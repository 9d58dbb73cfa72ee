"""Home files (YAML): areas, devices, intent routes and policies, validated before anything is
written, so a bad file changes nothing."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from denis.errors import InvalidInputError
from denis.graph.model import Area, Device, HomeGraph, Policy, Route

__all__ = ["default_home", "parse_home", "read_home_file"]

_NAME = r"^[\w.:-]+$"
_QUEUES = r"^(tools_ro|tools_mut|tts|graph_ingest|ha_playback|housekeeping)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Area(_Strict):
    id: str = Field(pattern=_NAME, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    aliases: list[str] = Field(default_factory=list, max_length=50)


class _Device(_Strict):
    id: str = Field(pattern=_NAME, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    area: str | None = None
    domain: str = Field(pattern=_NAME, max_length=50)
    aliases: list[str] = Field(default_factory=list, max_length=50)


class _Route(_Strict):
    intent: str = Field(pattern=_NAME, max_length=100)
    tool: str = Field(pattern=_NAME, max_length=100)
    queue: str = Field(pattern=_QUEUES)


class _Policy(_Strict):
    name: str = Field(pattern=_NAME, max_length=100)
    tool: str = Field(pattern=_NAME, max_length=100)
    users: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    confirm: bool = False


class _Home(_Strict):
    areas: list[_Area] = Field(default_factory=list)
    devices: list[_Device] = Field(default_factory=list)
    routes: list[_Route] = Field(default_factory=list)
    policies: list[_Policy] = Field(default_factory=list)


def parse_home(text: str) -> HomeGraph:
    try:
        home = _Home.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"the home file is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        fields = sorted(
            {".".join(str(p) for p in err["loc"]) or "(top level)" for err in exc.errors()}
        )
        raise InvalidInputError(f"the home file has invalid field(s): {', '.join(fields)}") from exc
    areas = {a.id for a in home.areas}
    unknown = sorted({d.area for d in home.devices if d.area and d.area not in areas})
    if unknown:
        raise InvalidInputError(f"devices name unknown areas: {', '.join(unknown)}")
    return HomeGraph(
        tuple(Route(r.intent, r.tool, r.queue) for r in home.routes),
        tuple(Policy(p.name, p.tool, tuple(p.users), p.confirm) for p in home.policies),
        tuple(Area(a.id, a.name, tuple(a.aliases)) for a in home.areas),
        tuple(Device(d.id, d.name, d.area, d.domain, tuple(d.aliases)) for d in home.devices),
    ).sorted()


def default_home() -> HomeGraph:
    return parse_home(
        resources.files("denis.graph").joinpath("default_home.yaml").read_text("utf-8")
    )


def read_home_file(path: Path) -> HomeGraph:
    try:
        return parse_home(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from exc
