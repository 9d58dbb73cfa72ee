"""Job types: a name, a queue, and a plain function run by a worker (or inline by the API).

A job function takes a ``JobContext`` and its JSON arguments and returns a JSON result; it
must not care where it runs. The registry routes by job type: each type has one queue.
Zones add their own job types when the app is wired; this module registers the
diagnostics operators and tests use (``diag.*``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from denis.async_plane.queues import Queue
from denis.errors import InvalidInputError

__all__ = ["JobContext", "JobFn", "JobRegistry", "JobSpec", "default_registry"]


@dataclass(frozen=True, slots=True)
class JobContext:
    key: str
    data_dir: Path
    hops: int
    attempt: int
    inline: bool


JobFn = Callable[[JobContext, dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    queue: Queue
    fn: JobFn

    @property
    def mutating(self) -> bool:
        return self.queue is Queue.TOOLS_MUT


class JobRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}

    def add(self, name: str, queue: Queue, fn: JobFn) -> JobSpec:
        if name in self._specs:
            raise ValueError(f"job type {name!r} is registered twice")
        spec = JobSpec(name, queue, fn)
        self._specs[name] = spec
        return spec

    def get(self, name: str) -> JobSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise InvalidInputError(f"unknown job type {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._specs)


# -- diagnostics --------------------------------------------------------------------------


def _echo(ctx: JobContext, args: dict[str, Any]) -> Any:
    return {"echo": args, "pid": os.getpid(), "hops": ctx.hops}


def _sleep(_: JobContext, args: dict[str, Any]) -> Any:
    time.sleep(float(args.get("seconds", 1.0)))
    return {"slept_s": args.get("seconds", 1.0), "pid": os.getpid()}


def _fail(_: JobContext, args: dict[str, Any]) -> Any:
    raise RuntimeError(str(args.get("message", "this job always fails")))


def _stubborn(_: JobContext, args: dict[str, Any]) -> Any:
    """Sleeps through the soft time limit (as a hung device call might): only the hard limit,
    which kills the worker's child process, stops it."""
    end_s = time.monotonic() + float(args.get("seconds", 10.0))
    while time.monotonic() < end_s:
        with contextlib.suppress(Exception):  # the soft limit's exception, ignored on purpose
            time.sleep(0.05)
    return {"slept_s": args.get("seconds", 10.0)}


def _effect(ctx: JobContext, args: dict[str, Any]) -> Any:
    """A visible side effect (a line in ``effects.jsonl``), after an optional delay: stands in
    for a device command when proving that a command is neither lost nor doubled."""
    time.sleep(float(args.get("delay_s", 0.0)))
    line = {"key": ctx.key, "label": args.get("label"), "pid": os.getpid(), "inline": ctx.inline}
    with (ctx.data_dir / "effects.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
    return {"effect": "done", "pid": os.getpid()}


def default_registry() -> JobRegistry:
    registry = JobRegistry()
    for queue in Queue:
        if queue is not Queue.DEAD_LETTER:
            registry.add(f"diag.echo.{queue}", queue, _echo)
            registry.add(f"diag.sleep.{queue}", queue, _sleep)
    registry.add("diag.fail", Queue.TOOLS_MUT, _fail)
    registry.add("diag.fail_ro", Queue.TOOLS_RO, _fail)
    registry.add("diag.effect", Queue.TOOLS_MUT, _effect)
    registry.add("diag.stubborn", Queue.TOOLS_RO, _stubborn)
    return registry
