"""The injection gate's learned layer: a hashed n-gram linear classifier, in plain Python.

The model is trained offline by ``training/injection/train.py`` (scikit-learn's logistic
regression on exactly the features below) and shipped in the package as two files under
``models/``: ``injection.json`` (bias, weight scale, default threshold, feature settings) and
``injection.bin`` (one signed byte per hashed feature). Nothing is downloaded, nothing is
unpickled, and inference needs only the standard library: the features of a text are the
character 3-5-grams of its folded form and its word 1-2-grams, each hashed with CRC-32 into a
fixed number of buckets; the score is the logistic of the bias plus the mean-normalised sum of
the weights of the buckets present (a binary, L2-normalised vector dotted with the weights).

Loading fails loudly (``ModelLoadError``) so a broken install is noticed at start, not per
request; scoring a text never allocates more than its own n-grams.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import zlib
from array import array
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["FEATURE_VERSION", "HashedLinearModel", "ModelLoadError", "features", "fold"]

FEATURE_VERSION = 1
_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")
_CHAR_N = (3, 4, 5)


class ModelLoadError(RuntimeError):
    """The model files are missing, malformed or of another feature version."""


def fold(text: str) -> str:
    """Lower case, accents off (``ñ`` too: speech-to-text and keyboards disagree on it), one
    space between words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", stripped).strip()


def features(text: str, buckets: int) -> set[int]:
    """The hashed buckets present in ``text`` (``buckets`` a power of two)."""
    mask = buckets - 1
    folded = fold(text)
    crc = zlib.crc32
    found: set[int] = set()
    padded = f" {folded} ".encode()
    size = len(padded)
    for n in _CHAR_N:
        for i in range(size - n + 1):
            found.add(crc(padded[i : i + n]) & mask)
    words = _WORD.findall(folded)
    previous = "<s>"
    for word in words:
        found.add(crc(f"w {word}".encode()) & mask)
        found.add(crc(f"b {previous} {word}".encode()) & mask)
        previous = word
    return found


@dataclass(frozen=True, slots=True)
class HashedLinearModel:
    weights: array  # type: ignore[type-arg]  # signed bytes, one per bucket
    scale: float  # weight = byte * scale
    bias: float
    threshold: float  # the default decision threshold, chosen on the training data
    buckets: int

    @classmethod
    def load(cls, directory: Path | None = None) -> HashedLinearModel:
        """Load ``injection.json`` and ``injection.bin`` (default: the packaged model)."""
        try:
            base = directory or resources.files("denis.sync_plane").joinpath("models")
            meta_text = base.joinpath("injection.json").read_text(encoding="utf-8")
            raw = base.joinpath("injection.bin").read_bytes()
            meta = json.loads(meta_text)
            if meta["feature_version"] != FEATURE_VERSION:
                raise ModelLoadError(f"model feature version {meta['feature_version']}")
            weights = array("b")
            weights.frombytes(raw)
            buckets = int(meta["buckets"])
            if len(weights) != buckets or buckets & (buckets - 1):
                raise ModelLoadError("model weights do not match its bucket count")
            return cls(
                weights,
                float(meta["scale"]),
                float(meta["bias"]),
                float(meta["threshold"]),
                buckets,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"the injection model could not be loaded: {exc}") from exc

    def score(self, text: str) -> float:
        """Probability-like score in [0, 1] that ``text`` is an injection."""
        found = features(text, self.buckets)
        if not found:
            return 0.0
        weights = self.weights
        total = sum(weights[i] for i in found) * self.scale / math.sqrt(len(found))
        z = self.bias + total
        if z < -30.0:  # exp() would overflow
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))
