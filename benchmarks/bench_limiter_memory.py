"""Memory of the in-memory rate limiter after 1,000,000 distinct keys.

``MemoryRateLimiter`` keeps one ``cachetools.TTLCache`` per window length, capped at
``max_keys`` (``DENIS_MEMORY_LIMITER_MAX_KEYS``, default 100,000). One million distinct client
addresses hit it within one window (a fake clock that never moves, so nothing expires and only
the cap can bound it): once with the default cap, once with a cap above the key count (2,000,000,
i.e. effectively unbounded) to show what the cap saves.

Each configuration runs in a fresh child process that reports its RSS growth (``/proc/self/
status``, after a ``gc.collect()``) at 250k, 500k and 1M keys. A third child repeats the
default-cap run under ``tracemalloc``: the exact Python heap the limiter holds, which must be
flat once the cap is reached (RSS creeps up a little more from allocator fragmentation, then
levels off). Tracing is slow (~4x), so the unbounded run is measured by RSS only.

Run: ``.venv/bin/python benchmarks/bench_limiter_memory.py`` (or ``make bench`` for all).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

from denis.resilience import ManualClock
from denis.sync_plane.limiter import MemoryRateLimiter, RateRule
from harness import md_table

KEYS = 1_000_000
DEFAULT_MAX_KEYS = 100_000  # Settings.memory_limiter_max_keys
UNBOUNDED_MAX_KEYS = 2_000_000
CHECKPOINTS = (250_000, 500_000, KEYS)
MIB = 1024 * 1024


def _rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def _fill(limiter: MemoryRateLimiter, start: int, stop: int) -> None:
    rule = RateRule.parse("client", "120/minute")
    for i in range(start, stop):
        # distinct IPv4-like addresses, as the per-client rule sees them
        key = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        if not limiter.hit_now(rule, key).allowed:
            raise RuntimeError("a fresh key was refused")


def child(max_keys: int, mode: str) -> dict[str, float]:
    """One measurement in this (fresh) process; the parent reads the JSON it prints."""
    gc.collect()
    limiter = MemoryRateLimiter(max_keys=max_keys, clock=ManualClock())
    traced = mode == "tracemalloc"
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if traced else _rss_kib()[0] * 1024
    result: dict[str, float] = {}
    done = 0
    for checkpoint in CHECKPOINTS:
        _fill(limiter, done, checkpoint)
        done = checkpoint
        gc.collect()
        now = tracemalloc.get_traced_memory()[0] if traced else _rss_kib()[0] * 1024
        result[f"at{checkpoint}"] = now - base
    result["kept"] = len(limiter)
    result["peak"] = (tracemalloc.get_traced_memory()[1] if traced else _rss_kib()[1] * 1024) - base
    return result


def _spawn_all(jobs: list[tuple[int, str]]) -> dict[tuple[int, str], dict[str, float]]:
    """The children side by side: memory is per process, so that only changes how long they
    take (time per hit is not reported)."""
    children = {
        (max_keys, mode): subprocess.Popen(
            [sys.executable, __file__, "--child", str(max_keys), mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        for max_keys, mode in jobs
    }
    results = {}
    for (max_keys, mode), proc in children.items():
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"child max_keys={max_keys} {mode} exited {proc.returncode}")
        results[max_keys, mode] = json.loads(out.strip().splitlines()[-1])
    return results


def run() -> str:
    print("limiter memory: 3 child processes ...", flush=True)
    jobs = [
        (DEFAULT_MAX_KEYS, "tracemalloc"),
        (DEFAULT_MAX_KEYS, "rss"),
        (UNBOUNDED_MAX_KEYS, "rss"),
    ]
    results = _spawn_all(jobs)
    rows = []
    for (max_keys, mode), got in results.items():
        kept = int(got["kept"])
        rows.append(
            [
                f"{max_keys:,}",
                "Python heap (tracemalloc)" if mode == "tracemalloc" else "RSS",
                f"{kept:,}",
                *(f"{got[f'at{c}'] / MIB:.1f}" for c in CHECKPOINTS),
                f"{got['peak'] / MIB:.1f}",
                f"{got[f'at{KEYS}'] / kept:.0f}",
            ]
        )
    heap = results[DEFAULT_MAX_KEYS, "tracemalloc"]
    capped, unbounded = results[DEFAULT_MAX_KEYS, "rss"], results[UNBOUNDED_MAX_KEYS, "rss"]
    heap_growth = heap[f"at{KEYS}"] - heap[f"at{CHECKPOINTS[0]}"]
    bounded = (
        int(capped["kept"]) == DEFAULT_MAX_KEYS
        and abs(heap_growth) < 0.02 * heap[f"at{KEYS}"]
        and capped[f"at{KEYS}"] < unbounded[f"at{KEYS}"] / 5
    )
    return "\n\n".join(
        [
            "Memory held (MiB) after N distinct keys, from a fresh process, after gc.collect():",
            md_table(
                [
                    "max_keys",
                    "measure",
                    "keys kept",
                    *(f"after {c:,} keys" for c in CHECKPOINTS),
                    "peak",
                    "bytes/key kept",
                ],
                rows,
            ),
            (
                f"Verdict: bounded: {'yes' if bounded else 'NO'}. With the default cap the limiter "
                f"keeps exactly {int(capped['kept']):,} keys; its Python heap changes by "
                f"{heap_growth / MIB:+.2f} MiB between {CHECKPOINTS[0]:,} and {KEYS:,} keys. "
                f"Without the cap it holds {unbounded[f'at{KEYS}'] / capped[f'at{KEYS}']:.1f}x "
                "as much RSS and grows with every new key."
            ),
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), sys.argv[3])))
    else:
        print(run())
