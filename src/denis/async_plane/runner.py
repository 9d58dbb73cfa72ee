"""Runs one job under its idempotency claim: the same code in a worker and inline in the API.

The claim is what makes a mutating command happen at most once per key, whoever runs it
(a worker, a redelivered message, a re-dispatch from the journal, the API failing open): the
first claimant runs it, a live holder makes the others skip, and a finished job answers its
stored result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from denis.async_plane.jobs import JobContext, JobRegistry
from denis.async_plane.ledger import ClaimState, JobLedger, owner_id

__all__ = ["JobRunner", "RunResult"]


@dataclass(frozen=True, slots=True)
class RunResult:
    state: str  # "done" | "failed" | "busy" | "dead"
    result: Any = None
    error: str | None = None
    attempts: int = 0
    duplicate: bool = False  # the job had already run: this is its stored result


class JobRunner:
    def __init__(
        self, registry: JobRegistry, ledger: JobLedger, data_dir: Path, lease_s: float
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self._data_dir = data_dir
        self._lease_s = lease_s

    def run(
        self, name: str, args: dict[str, Any], key: str, hops: int, *, inline: bool
    ) -> RunResult:
        spec = self.registry.get(name)
        claim = self.ledger.claim(key, owner_id(), self._lease_s)
        if claim.state is ClaimState.DONE:
            return RunResult("done", claim.result, attempts=claim.attempts, duplicate=True)
        if claim.state is not ClaimState.CLAIMED:
            return RunResult(claim.state.value, attempts=claim.attempts)
        context = JobContext(key, self._data_dir, hops, claim.attempts, inline)
        try:
            result = spec.fn(context, args)
        except Exception as exc:  # noqa: BLE001 - a job's failure is recorded, never raised
            error = f"{type(exc).__name__}: {exc}"
            self.ledger.fail(key, error)
            return RunResult("failed", error=error, attempts=claim.attempts)
        self.ledger.complete(key, result)
        return RunResult("done", result, attempts=claim.attempts)
