"""Trace ids: 128 random bits as 32 hex digits, drawn 256 at a time per thread, and never
shared between a process and a child it forks (a prefork worker, say)."""

from __future__ import annotations

import os
import re
import threading

import pytest

from denis.resilience.logs import new_trace_id


def test_trace_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_trace_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_draw_their_own_ids() -> None:
    found: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(new_trace_id() for _ in range(1000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for into in found for i in into]
    assert len(set(everything)) == 4000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_trace_id()  # the parent holds a part-used supply
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read_end)
        os.write(write_end, "".join(new_trace_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    parent_ids = {new_trace_id() for _ in range(10)}
    assert len(child_ids) == 10
    assert not child_ids & parent_ids
