"""The injection gate's cost per text on one core (issue 7): rules, then the classifier, as
/chat runs it, over the held-out requests of training/injection (and tool text separately).

    taskset -c 0 .venv/bin/python benchmarks/bench_injection.py
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
import zlib
from pathlib import Path

from denis.sync_plane import build_detector

DATA = Path(__file__).resolve().parents[1] / "training" / "injection" / "data"
SEED, TEST_PERCENT = 20260107, 25  # as training/injection/train.py splits


def held_out() -> list[dict[str, str]]:
    rows = []
    for lang in ("en", "es"):
        for line in (DATA / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            key = f"{SEED}:{row['lang']}:{row['group']}".encode()
            if zlib.crc32(key) % 100 < TEST_PERCENT:
                rows.append(row)
    return rows


def measure(check, texts: list[str], rounds: int) -> dict[str, float]:
    for text in texts:  # warm up
        check(text)
    timings = []
    gc.disable()
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter_ns()
            check(text)
            timings.append((time.perf_counter_ns() - started) / 1e6)
    gc.enable()
    timings.sort()
    return {
        "n": len(timings),
        "median_ms": round(statistics.median(timings), 4),
        "p99_ms": round(timings[int(len(timings) * 0.99)], 4),
        "max_ms": round(timings[-1], 4),
    }


def main() -> None:
    detector = build_detector()
    rows = held_out()
    requests = [r["text"] for r in rows if r["kind"] == "request"]
    tools = [r["text"] for r in rows if r["kind"] == "tool"]
    started = time.perf_counter()
    build_detector()
    load_ms = (time.perf_counter() - started) * 1000
    out = {
        "cpu_affinity": sorted(__import__("os").sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "model_load_ms": round(load_ms, 1),
        "requests": measure(detector.inspect, requests, 5),
        "tool_text": measure(detector.inspect_tool_text, tools, 5),
        "request_chars_median": statistics.median(len(t) for t in requests),
        "tool_chars_median": statistics.median(len(t) for t in tools),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
