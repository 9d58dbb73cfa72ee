"""The job ledger (one SQLite file) and the runner that uses its claims: no sockets, no broker.

The claim is what keeps a mutating command to at most one effect per key, whoever runs it, so
it is tried here from many threads and from several separate processes at once: exactly one
claimant may win. Leases are made expired by giving a negative lease, never by sleeping.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from denis.async_plane import parse_queues
from denis.async_plane.jobs import JobContext, JobRegistry
from denis.async_plane.ledger import Claim, ClaimState, JobLedger, owner_id
from denis.async_plane.queues import Queue
from denis.async_plane.runner import JobRunner
from denis.errors import InvalidInputError

LEASE_S = 60.0
EXPIRED = -1.0  # a lease that ended a second before it was taken
THREADS = 12
PROCESSES = 3


@pytest.fixture
def ledger(tmp_path: Path) -> JobLedger:
    return JobLedger(tmp_path / "jobs.sqlite3")


@pytest.fixture
def dead_owner() -> str:
    """An owner id on this host whose process has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}/{proc.pid}"


def journal(ledger: JobLedger, key: str = "k1", queue: str = "tools_mut", **args: Any) -> str:
    assert ledger.journal(key, "diag.effect", queue, dict(args), 1)
    return key


# -- journal -------------------------------------------------------------------------------


def test_journal_is_idempotent_and_keeps_the_first_record(ledger: JobLedger) -> None:
    assert ledger.journal("k1", "diag.effect", "tools_mut", {"label": "first"}, 2) is True
    assert ledger.journal("k1", "diag.echo.tts", "tts", {"label": "second"}, 0) is False

    record = ledger.get("k1")
    assert record is not None
    assert (record.name, record.queue, record.args, record.hops) == (
        "diag.effect",
        "tools_mut",
        {"label": "first"},
        2,
    )
    assert (record.state, record.attempts, record.redispatches) == ("pending", 0, 0)
    assert record.result is None
    assert record.error is None


def test_an_unknown_key_has_no_record_and_cannot_be_claimed(ledger: JobLedger) -> None:
    assert ledger.get("nope") is None
    assert ledger.claim("nope", owner_id(), LEASE_S) == Claim(ClaimState.BUSY)


# -- claims --------------------------------------------------------------------------------


def test_first_claim_wins_and_a_live_holder_makes_the_others_busy(ledger: JobLedger) -> None:
    key = journal(ledger)

    assert ledger.claim(key, owner_id(), LEASE_S) == Claim(ClaimState.CLAIMED, attempts=1)
    second = ledger.claim(key, "someone-else/1", LEASE_S)

    assert second.state is ClaimState.BUSY
    assert ledger.get(key).state == "running"  # type: ignore[union-attr]
    assert ledger.get(key).attempts == 1  # type: ignore[union-attr]  # a refused claim is no attempt


def test_an_expired_lease_of_a_live_owner_can_be_claimed_again(ledger: JobLedger) -> None:
    key = journal(ledger)
    assert ledger.claim(key, owner_id(), EXPIRED).state is ClaimState.CLAIMED

    again = ledger.claim(key, owner_id(), LEASE_S)

    assert again == Claim(ClaimState.CLAIMED, attempts=2)


def test_a_dead_owner_loses_its_claim_even_inside_its_lease(
    ledger: JobLedger, dead_owner: str
) -> None:
    key = journal(ledger)
    assert ledger.claim(key, dead_owner, LEASE_S).state is ClaimState.CLAIMED

    again = ledger.claim(key, owner_id(), LEASE_S)

    assert again == Claim(ClaimState.CLAIMED, attempts=2)


def test_an_owner_on_another_host_is_trusted_until_its_lease_ends(ledger: JobLedger) -> None:
    live, expired = journal(ledger, "live"), journal(ledger, "expired")
    elsewhere = "some-other-host.invalid/1"
    ledger.claim(live, elsewhere, LEASE_S)
    ledger.claim(expired, elsewhere, EXPIRED)

    assert ledger.claim(live, owner_id(), LEASE_S).state is ClaimState.BUSY
    assert ledger.claim(expired, owner_id(), LEASE_S).state is ClaimState.CLAIMED


def test_a_completed_job_answers_its_stored_result_to_every_later_claim(
    ledger: JobLedger,
) -> None:
    key = journal(ledger)
    ledger.claim(key, owner_id(), LEASE_S)
    ledger.complete(key, {"effect": "done", "n": [1, 2]})

    for _ in range(2):
        claim = ledger.claim(key, owner_id(), LEASE_S)
        assert claim == Claim(ClaimState.DONE, attempts=1, result={"effect": "done", "n": [1, 2]})
    record = ledger.get(key)
    assert record is not None
    assert (record.state, record.result, record.attempts) == (
        "done",
        {"effect": "done", "n": [1, 2]},
        1,
    )


def test_a_failed_job_can_be_claimed_again_for_its_retry(ledger: JobLedger) -> None:
    key = journal(ledger)
    ledger.claim(key, owner_id(), LEASE_S)
    ledger.fail(key, "RuntimeError: boom")

    record = ledger.get(key)
    assert record is not None
    assert (record.state, record.error) == ("failed", "RuntimeError: boom")
    assert ledger.claim(key, owner_id(), LEASE_S) == Claim(ClaimState.CLAIMED, attempts=2)


def test_a_buried_job_is_dead_to_every_claim(ledger: JobLedger) -> None:
    key = journal(ledger)
    ledger.claim(key, owner_id(), LEASE_S)
    ledger.fail(key, "RuntimeError: boom")

    assert ledger.bury(key, "RuntimeError: boom") is True

    assert ledger.claim(key, owner_id(), LEASE_S) == Claim(ClaimState.DEAD, attempts=1)
    assert ledger.get(key).state == "dead"  # type: ignore[union-attr]


# -- dead letter ---------------------------------------------------------------------------


def test_bury_is_exactly_once_per_key(ledger: JobLedger) -> None:
    key = journal(ledger, label="lamp")
    for _ in range(4):
        ledger.claim(key, owner_id(), EXPIRED)

    assert ledger.bury(key, "RuntimeError: first") is True
    assert ledger.bury(key, "TimeLimitExceeded: second") is False

    letters = ledger.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.key, letter.name, letter.queue, letter.args, letter.attempts) == (
        key,
        "diag.effect",
        "tools_mut",
        {"label": "lamp"},
        4,
    )
    assert letter.error == "RuntimeError: first"


def test_bury_of_an_unknown_key_does_nothing(ledger: JobLedger) -> None:
    assert ledger.bury("nope", "boom") is False
    assert ledger.dead_letters() == []


def test_resurrect_takes_a_job_out_of_the_dead_letter_once(ledger: JobLedger) -> None:
    key = journal(ledger, label="lamp")
    ledger.claim(key, owner_id(), LEASE_S)
    ledger.bury(key, "RuntimeError: boom")

    record = ledger.resurrect(key)

    assert record is not None
    assert (record.key, record.state, record.attempts, record.error) == (key, "pending", 0, None)
    assert record.args == {"label": "lamp"}
    assert ledger.dead_letters() == []
    assert ledger.resurrect(key) is None
    assert ledger.claim(key, owner_id(), LEASE_S) == Claim(ClaimState.CLAIMED, attempts=1)
    # Once out, it can land in the dead letter again (exactly once again).
    assert ledger.bury(key, "RuntimeError: again") is True
    assert [letter.key for letter in ledger.dead_letters()] == [key]


def test_resurrect_of_a_key_not_in_the_dead_letter_is_none(ledger: JobLedger) -> None:
    key = journal(ledger)
    assert ledger.resurrect(key) is None
    assert ledger.resurrect("nope") is None
    assert ledger.get(key).state == "pending"  # type: ignore[union-attr]


def test_purge_empties_the_dead_letter_and_counts(ledger: JobLedger) -> None:
    for key in ("a", "b", "c"):
        journal(ledger, key)
        ledger.bury(key, "boom")

    assert ledger.purge_dead_letters() == 3
    assert ledger.dead_letters() == []
    assert ledger.purge_dead_letters() == 0


# -- stale jobs (the journal sweep) ----------------------------------------------------------

ALL_OF_THEM = -60.0  # a cutoff a minute in the future: every row is "old"
NONE_OF_THEM = 3600.0


def test_stale_finds_unfinished_jobs_of_a_queue_whose_owner_is_gone(
    ledger: JobLedger, dead_owner: str
) -> None:
    pending = journal(ledger, "pending")
    dead_holder = journal(ledger, "dead-holder")
    ledger.claim(dead_holder, dead_owner, LEASE_S)
    lapsed = journal(ledger, "lapsed")
    ledger.claim(lapsed, owner_id(), EXPIRED)
    held = journal(ledger, "held")
    ledger.claim(held, owner_id(), LEASE_S)
    done = journal(ledger, "done")
    ledger.claim(done, owner_id(), LEASE_S)
    ledger.complete(done, None)
    failed = journal(ledger, "failed")
    ledger.claim(failed, owner_id(), LEASE_S)
    ledger.fail(failed, "boom")
    buried = journal(ledger, "buried")
    ledger.bury(buried, "boom")
    journal(ledger, "other-queue", queue="tools_ro")

    stale = ledger.stale("tools_mut", ALL_OF_THEM)

    assert sorted(record.key for record in stale) == sorted([pending, dead_holder, lapsed])
    assert ledger.stale("tools_mut", NONE_OF_THEM) == []
    assert [r.key for r in ledger.stale("tools_ro", ALL_OF_THEM)] == ["other-queue"]


def test_mark_redispatched_makes_a_job_pending_and_counts_but_never_undoes_done(
    ledger: JobLedger, dead_owner: str
) -> None:
    lost = journal(ledger, "lost")
    ledger.claim(lost, dead_owner, LEASE_S)
    done = journal(ledger, "done")
    ledger.claim(done, owner_id(), LEASE_S)
    ledger.complete(done, {"ok": True})

    ledger.mark_redispatched(lost)
    ledger.mark_redispatched(lost)
    ledger.mark_redispatched(done)

    record = ledger.get(lost)
    assert record is not None
    assert (record.state, record.redispatches) == ("pending", 2)
    assert ledger.get(done).state == "done"  # type: ignore[union-attr]
    assert ledger.get(done).redispatches == 0  # type: ignore[union-attr]


# -- events from worker processes --------------------------------------------------------------


def test_events_round_trip_in_order(ledger: JobLedger, tmp_path: Path) -> None:
    assert ledger.last_event_id() == 0
    assert ledger.events_after(0) == []

    ledger.record_event("celery.task.failed", job="diag.fail", attempt=1)
    ledger.record_event("celery.dead_letter", key="k1", where=tmp_path)  # not JSON: str()ed

    events = ledger.events_after(0)
    assert [(signal, fields) for _, signal, fields in events] == [
        ("celery.task.failed", {"job": "diag.fail", "attempt": 1}),
        ("celery.dead_letter", {"key": "k1", "where": str(tmp_path)}),
    ]
    first_id, last_id = events[0][0], events[1][0]
    assert first_id < last_id == ledger.last_event_id()
    assert [e[1] for e in ledger.events_after(first_id)] == ["celery.dead_letter"]
    assert ledger.events_after(last_id) == []
    assert len(ledger.events_after(0, limit=1)) == 1


def test_a_second_ledger_on_the_same_file_sees_the_same_state(
    ledger: JobLedger, tmp_path: Path
) -> None:
    key = journal(ledger)
    ledger.claim(key, owner_id(), LEASE_S)
    ledger.complete(key, {"ok": 1})
    ledger.record_event("celery.task.failed", job="x")

    other = JobLedger(tmp_path / "jobs.sqlite3")

    assert other.claim(key, owner_id(), LEASE_S).result == {"ok": 1}
    assert other.last_event_id() == ledger.last_event_id()


# -- concurrency: exactly one winner ---------------------------------------------------------


def test_many_threads_claiming_one_key_make_exactly_one_claimant(ledger: JobLedger) -> None:
    key = journal(ledger)
    start = threading.Barrier(THREADS)

    def contend(i: int) -> ClaimState:
        start.wait()
        return ledger.claim(key, f"{owner_id()}#{i}", LEASE_S).state

    with ThreadPoolExecutor(THREADS) as pool:
        states = list(pool.map(contend, range(THREADS)))

    assert states.count(ClaimState.CLAIMED) == 1
    assert states.count(ClaimState.BUSY) == THREADS - 1
    assert ledger.get(key).attempts == 1  # type: ignore[union-attr]


def _claim_in_a_process(path: str, key: str, start: Any, results: Any) -> None:
    """Runs in a spawned process: its own ledger object, connection and pid."""
    ledger = JobLedger(Path(path))
    start.wait(timeout=60)
    claim = ledger.claim(key, owner_id(), LEASE_S)
    results.put(claim.state.value)
    start.wait(timeout=60)  # stay alive (a live owner) until every process has claimed


def test_separate_processes_claiming_one_key_make_exactly_one_claimant(
    ledger: JobLedger,
) -> None:
    key = journal(ledger)
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(PROCESSES), spawn.Queue()
    procs = [
        spawn.Process(target=_claim_in_a_process, args=(str(ledger.path), key, start, results))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    try:
        states = [results.get(timeout=60) for _ in range(PROCESSES)]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    results.close()
    results.join_thread()

    assert states.count("claimed") == 1, states
    assert states.count("busy") == PROCESSES - 1, states
    assert all(proc.exitcode == 0 for proc in procs)
    record = ledger.get(key)
    assert record is not None
    assert record.attempts == 1
    # The winner has exited since: its claim is now held by a dead owner and is free again.
    assert ledger.claim(key, owner_id(), LEASE_S).state is ClaimState.CLAIMED


def _open_at(path: str, start: Any, results: Any) -> None:
    """Runs in a spawned process: opens a ledger on a new file together with the others."""
    start.wait(timeout=60)
    try:
        JobLedger(Path(path)).journal(f"k-{os.getpid()}", "t.ok", "tools_ro", {}, 0)
    except sqlite3.Error as exc:
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put("ok")


def test_processes_opening_a_new_ledger_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Before the open was retried, eight processes at once failed one round in about six."""
    spawn = multiprocessing.get_context("spawn")
    opened: list[str] = []
    for round_no in range(3):
        path = tmp_path / f"round-{round_no}" / "jobs.sqlite3"
        path.parent.mkdir()
        start, results = spawn.Barrier(8), spawn.Queue()
        procs = [spawn.Process(target=_open_at, args=(str(path), start, results)) for _ in range(8)]
        for proc in procs:
            proc.start()
        try:
            opened += [results.get(timeout=60) for _ in procs]
        finally:
            for proc in procs:
                proc.join(timeout=60)
        results.close()
        results.join_thread()
    assert opened == ["ok"] * 24


# -- the runner --------------------------------------------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.contexts: list[JobContext] = []

    def job(self, result: Any = None, error: Exception | None = None) -> Callable[..., Any]:
        def run(ctx: JobContext, args: dict[str, Any]) -> Any:
            self.contexts.append(ctx)
            if error is not None:
                raise error
            return {"args": args, **(result or {})}

        return run


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def runner(ledger: JobLedger, tmp_path: Path, calls: Calls) -> JobRunner:
    registry = JobRegistry()
    registry.add("t.ok", Queue.TOOLS_MUT, calls.job({"ok": True}))
    registry.add("t.boom", Queue.TOOLS_RO, calls.job(error=RuntimeError("boom")))
    return JobRunner(registry, ledger, tmp_path, LEASE_S)


def test_runner_runs_a_job_under_its_claim_and_stores_the_result(
    runner: JobRunner, ledger: JobLedger, calls: Calls, tmp_path: Path
) -> None:
    ledger.journal("k1", "t.ok", "tools_mut", {"a": 1}, 2)

    outcome = runner.run("t.ok", {"a": 1}, "k1", 2, inline=True)

    assert (outcome.state, outcome.result, outcome.attempts, outcome.duplicate) == (
        "done",
        {"args": {"a": 1}, "ok": True},
        1,
        False,
    )
    assert calls.contexts == [
        JobContext(key="k1", data_dir=tmp_path, hops=2, attempt=1, inline=True)
    ]
    assert ledger.get("k1").result == {"args": {"a": 1}, "ok": True}  # type: ignore[union-attr]


def test_runner_answers_a_done_job_with_its_stored_result_and_does_not_run_it_again(
    runner: JobRunner, ledger: JobLedger, calls: Calls
) -> None:
    ledger.journal("k1", "t.ok", "tools_mut", {"a": 1}, 0)
    first = runner.run("t.ok", {"a": 1}, "k1", 0, inline=False)

    second = runner.run("t.ok", {"a": 2}, "k1", 0, inline=True)

    assert second.duplicate is True
    assert (second.state, second.result) == ("done", first.result)
    assert len(calls.contexts) == 1


def test_runner_records_a_failing_job_as_failed_and_does_not_raise(
    runner: JobRunner, ledger: JobLedger, calls: Calls
) -> None:
    ledger.journal("k1", "t.boom", "tools_ro", {}, 0)

    outcome = runner.run("t.boom", {}, "k1", 0, inline=False)

    assert (outcome.state, outcome.error, outcome.attempts) == ("failed", "RuntimeError: boom", 1)
    record = ledger.get("k1")
    assert record is not None
    assert (record.state, record.error) == ("failed", "RuntimeError: boom")
    retry = runner.run("t.boom", {}, "k1", 0, inline=False)  # a retry is a new attempt
    assert (retry.state, retry.attempts) == ("failed", 2)
    assert len(calls.contexts) == 2


def test_runner_skips_a_job_that_a_live_owner_holds_or_that_is_dead(
    runner: JobRunner, ledger: JobLedger, calls: Calls
) -> None:
    ledger.journal("held", "t.ok", "tools_mut", {}, 0)
    ledger.claim("held", "someone/1", LEASE_S)  # a foreign host: trusted for its lease
    ledger.journal("dead", "t.ok", "tools_mut", {}, 0)
    ledger.bury("dead", "boom")

    assert runner.run("t.ok", {}, "held", 0, inline=True).state == "busy"
    assert runner.run("t.ok", {}, "dead", 0, inline=True).state == "dead"
    assert runner.run("t.ok", {}, "never-journaled", 0, inline=True).state == "busy"
    assert calls.contexts == []


def test_runner_refuses_an_unknown_job_type(runner: JobRunner) -> None:
    with pytest.raises(InvalidInputError, match="unknown job type"):
        runner.run("t.nope", {}, "k1", 0, inline=True)


# -- queue names for `denis worker --queues` ----------------------------------------------------


def test_parse_queues_accepts_known_names_with_spaces_and_empty_parts() -> None:
    assert parse_queues("tools_mut, tools_ro,,") == ["tools_mut", "tools_ro"]
    assert parse_queues("dead_letter") == ["dead_letter"]


@pytest.mark.parametrize("text", ["", " , ", "tools_mut,nope", "TOOLS_MUT"])
def test_parse_queues_refuses_unknown_or_no_names(text: str) -> None:
    with pytest.raises(ValueError, match="unknown queue"):
        parse_queues(text)


def test_a_failed_attempt_awaiting_its_retry_is_found_by_the_sweep(tmp_path) -> None:
    """The retry of a mutating job lives in its worker until the countdown ends; requeued as
    pending, the job is re-dispatched by the sweep if that worker dies meanwhile."""
    ledger = JobLedger(tmp_path / "jobs.sqlite3")
    ledger.journal("k", "diag.effect", "tools_mut", {}, 1)
    assert ledger.claim("k", owner_id(), 60).state is ClaimState.CLAIMED
    ledger.fail("k", "RuntimeError: boom")
    assert ledger.stale("tools_mut", older_than_s=-1) == []  # failed: nobody re-sends it
    ledger.requeue("k")
    assert [r.key for r in ledger.stale("tools_mut", older_than_s=-1)] == ["k"]
    assert ledger.claim("k", owner_id(), 60).state is ClaimState.CLAIMED
