"""Runs every benchmark (``make bench``) and prints one Markdown report.

The report also goes to ``benchmarks/.out/latest.md`` (not tracked); ``benchmarks/RESULTS.md``
holds a reviewed copy with the reading of each verdict. Each benchmark measures ratios against
a baseline taken in the same run, so results from a noisy machine still compare.

Run: ``make bench``, or ``.venv/bin/python benchmarks/run_all.py NAME ...`` with names from
``BENCHMARKS`` (pipeline, redis_hung, memory, dispatch, graph, assistant, attribution, redis_turn).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import bench_assistant
import bench_attribution
import bench_dispatch
import bench_graph
import bench_limiter_memory
import bench_pipeline
import bench_redis_hung
import bench_redis_turn
from harness import machine_line

BENCHMARKS = {
    "pipeline": ("1. Pipeline overhead vs a bare FastAPI route", bench_pipeline.run),
    "redis_hung": ("2. p99 with Redis hung, after the breaker opened", bench_redis_hung.run),
    "memory": ("3. Memory of the in-memory rate limiter", bench_limiter_memory.run),
    "dispatch": ("4. Async plane: dispatch cost, and a hung Redis broker", bench_dispatch.run),
    "graph": (
        "5. Graph zone: route resolution, DecisionTrace enqueue and writer",
        bench_graph.run,
    ),
    "assistant": ("6. Assistant end to end (issue 5)", bench_assistant.run),
    "attribution": ("1b. Where a turn's CPU goes, step by step", bench_attribution.run),
    "redis_turn": ("1c. A turn's Redis work alone, in process", bench_redis_turn.run),
}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    sections = [f"Machine: {machine_line()}"]
    began = time.perf_counter()
    for name in names or list(BENCHMARKS):
        title, run = BENCHMARKS[name]
        started = time.perf_counter()
        body = run()
        sections.append(f"## {title}\n\n{body}\n\n({time.perf_counter() - started:.0f} s)")
    sections.append(f"Total: {time.perf_counter() - began:.0f} s")
    report = "\n\n".join(sections) + "\n"
    out = Path(__file__).resolve().parent / ".out" / "latest.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
