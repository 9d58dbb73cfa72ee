"""Train the injection gate's classifier and write it into the package, with a metrics report.

    .venv/bin/pip install scikit-learn   # training only; Denis itself needs neither it nor numpy
    .venv/bin/python training/injection/train.py

Reads ``data/{en,es}.jsonl`` (``make_data.py``), splits by group with a fixed seed (a group is a
template or a source record: the held-out split holds templates never trained on), picks the
regularisation and the threshold by grouped cross-validation on the training split only, fits
logistic regression on Denis's own features (``denis.sync_plane.injection_model.features``),
quantises the weights to signed bytes and writes ``src/denis/sync_plane/models/injection.{json,bin}``.
Then it scores the held-out split through the shipped code path (``build_detector``: rules, then
the exported model) and writes ``metrics.json`` and ``metrics.md`` next to this file.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
import zlib
from array import array
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "src"))

from denis.sync_plane.injection import build_detector  # noqa: E402
from denis.sync_plane.injection_model import FEATURE_VERSION, features  # noqa: E402

SEED = 20260107
TEST_PERCENT = 25
BUCKETS = 1 << 18
MAX_BENIGN_FPR = 0.005  # the threshold is chosen for at most this FPR on benign training texts
MODEL_DIR = ROOT / "src" / "denis" / "sync_plane" / "models"


def load() -> list[dict[str, Any]]:
    rows = []
    for lang in ("en", "es"):
        for line in (HERE / "data" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines():
            rows.append(json.loads(line))
    return rows


def is_test(row: dict[str, Any]) -> bool:
    return zlib.crc32(f"{SEED}:{row['lang']}:{row['group']}".encode()) % 100 < TEST_PERCENT


def matrix(texts: list[str]) -> csr_matrix:
    indptr, indices = [0], []
    for text in texts:
        found = sorted(features(text, BUCKETS))
        indices.extend(found)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float64)
    x = csr_matrix((data, indices, indptr), shape=(len(texts), BUCKETS))
    norms = np.sqrt(np.diff(x.indptr)).clip(min=1)
    return csr_matrix(x.multiply(1 / norms[:, None]))


def choose(x: csr_matrix, y: np.ndarray, groups: list[str]) -> tuple[float, float]:
    """(C, threshold) by 5-fold grouped cross-validation on the training split."""
    best = (-1.0, 1.0, 0.5)
    for c in (2.0, 8.0, 32.0):
        oof = np.zeros(len(y))
        for fit_idx, val_idx in GroupKFold(n_splits=5).split(x, y, groups):
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
            model.fit(x[fit_idx], y[fit_idx])
            oof[val_idx] = model.predict_proba(x[val_idx])[:, 1]
        benign = np.sort(oof[y == 0])
        floor = benign[min(len(benign) - 1, math.ceil(len(benign) * (1 - MAX_BENIGN_FPR)))]
        for threshold in np.arange(0.30, 0.96, 0.01):
            if threshold <= floor:
                continue
            pred = oof >= threshold
            tp = int((pred & (y == 1)).sum())
            f1 = 2 * tp / max(1, int(pred.sum()) + int((y == 1).sum()))
            if f1 > best[0]:
                best = (f1, c, float(threshold))
        print(f"C={c}: best cross-validated F1 so far {best[0]:.3f} (C={best[1]}, t={best[2]:.2f})")
    return best[1], best[2]


def export(model: LogisticRegression, threshold: float) -> None:
    weights = model.coef_[0]
    scale = float(np.abs(weights).max()) / 127
    quantised = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    (MODEL_DIR / "injection.bin").write_bytes(array("b", quantised.tolist()).tobytes())
    meta = {
        "feature_version": FEATURE_VERSION,
        "buckets": BUCKETS,
        "scale": scale,
        "bias": float(model.intercept_[0]),
        "threshold": round(threshold, 2),
        "trained_by": "training/injection/train.py",
        "seed": SEED,
    }
    (MODEL_DIR / "injection.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def rates(pairs: list[tuple[int, bool]]) -> dict[str, float | int]:
    tp = sum(1 for y, p in pairs if y == 1 and p)
    fp = sum(1 for y, p in pairs if y == 0 and p)
    fn = sum(1 for y, p in pairs if y == 1 and not p)
    tn = sum(1 for y, p in pairs if y == 0 and not p)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {"n": len(pairs), "attacks": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "fpr": round(fpr, 4)}  # fmt: skip


def evaluate(test: list[dict[str, Any]]) -> dict[str, Any]:
    detector = build_detector()
    results: dict[str, Any] = {}
    decided: list[tuple[dict[str, Any], bool, str]] = []
    for row in test:
        if row["kind"] == "tool":
            verdict = detector.inspect_tool_text(row["text"])
        else:
            verdict = detector.inspect(row["text"])
        decided.append((row, verdict.blocked, verdict.layer))
    for lang in ("en", "es"):
        mine = [(r, b) for r, b, _ in decided if r["lang"] == lang]
        results[lang] = {
            "all": rates([(r["label"], b) for r, b in mine]),
            "requests": rates([(r["label"], b) for r, b in mine if r["kind"] == "request"]),
            "tool_text": rates([(r["label"], b) for r, b in mine if r["kind"] == "tool"]),
            "benign_requests_fpr": rates(
                [(0, b) for r, b in mine if r["kind"] == "request" and r["label"] == 0]
            )["fpr"],
        }
        results[lang]["errors"] = [
            {"label": r["label"], "kind": r["kind"], "layer": layer, "text": r["text"][:160]}
            for r, b, layer in decided
            if r["lang"] == lang and b != bool(r["label"])
        ]
    return results


def main() -> None:
    rows = load()
    train = [r for r in rows if not is_test(r)]
    test = [r for r in rows if is_test(r)]
    print(f"{len(train)} training rows, {len(test)} held out")
    x = matrix([r["text"] for r in train])
    y = np.array([r["label"] for r in train])
    c, threshold = choose(x, y, [f"{r['lang']}:{r['group']}" for r in train])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(x, y)
    export(model, threshold)
    results = evaluate(test)
    detector = build_detector()
    texts = [r["text"] for r in test if r["kind"] == "request"]
    timings = []
    for text in texts * 3:
        started = time.perf_counter()
        detector.inspect(text)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    results["latency_ms"] = {
        "median": round(statistics.median(timings), 4),
        "p99": round(timings[int(len(timings) * 0.99)], 4),
        "n": len(timings),
    }
    results["model"] = {
        "C": c,
        "threshold": round(threshold, 2),
        "train": len(train),
        "test": len(test),
    }
    (HERE / "metrics.json").write_text(
        json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    lines = [
        "| language | set | n | attacks | precision | recall | F1 | FPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lang in ("en", "es"):
        for part in ("all", "requests", "tool_text"):
            m = results[lang][part]
            lines.append(
                f"| {lang} | {part} | {m['n']} | {m['attacks']} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['fpr']:.4f} |"
            )
    (HERE / "metrics.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(json.dumps(results["latency_ms"]), json.dumps(results["model"]))
    for lang in ("en", "es"):
        print(
            lang,
            "benign request FPR",
            results[lang]["benign_requests_fpr"],
            "errors:",
            len(results[lang]["errors"]),
        )


if __name__ == "__main__":
    main()
