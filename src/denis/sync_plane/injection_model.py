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
request. ``features`` is the definition the model was trained on; scoring uses
``CachedFeatures``, which computes exactly the same set from cached pieces (see its docstring).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import zlib
from array import array
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = [
    "FEATURE_VERSION",
    "CachedFeatures",
    "HashedLinearModel",
    "ModelLoadError",
    "features",
    "fold",
]

FEATURE_VERSION = 1
_WORD = re.compile(r"\w+")
_CHAR_N = (3, 4, 5)
_LONGEST_CACHED = 20  # characters: a longer token (a URL, junk) is never cached


class ModelLoadError(RuntimeError):
    """The model files are missing, malformed or of another feature version."""


def fold(text: str) -> str:
    """Lower case, accents off (``ñ`` too: speech-to-text and keyboards disagree on it), one
    space between words. An ASCII text skips the Unicode work (NFKD and the combining marks
    change nothing there); ``str.split()`` splits on exactly the whitespace ``\\s`` matches
    (``tests/unit/test_injection_features.py`` checks both against the regular-expression form
    the model was trained with)."""
    if text.isascii():
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


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


class CachedFeatures:
    """``features(text, buckets)`` assembled from cached pieces: same set, a fraction of the work.

    The folded text is its tokens (runs without spaces) joined by single spaces, padded with one
    space at each end. Every character n-gram (n <= 5) of that either has no space inside it, and
    is then an n-gram of one `` token `` alone, or straddles a space between two tokens, and then
    lies within the 7 bytes around that space. Words (``\\w+``) never cross a space, so a text's
    word unigrams are its tokens' and only the bigrams join neighbours. So the features of a text
    are the union of per-token sets, per-gap sets and per-word-pair buckets, each a function of a
    few bytes and cached: a text of words seen before costs a few lookups instead of three
    CRC-32s per byte (about a third of ``features``'s time on a short request), and a long text
    scored whole and then sentence by sentence hashes each known token once.

    Every cache is bounded by ``cache_size`` (gaps and word pairs LRU; tokens start over when
    full) and only tokens of up to 20 characters are cached, so the caches hold at most about
    12 MB whatever they are fed (a few MB for everyday words). Learning a token costs more than
    hashing it inside a whole text, so a text learns at most ``new_per_text`` new tokens and one
    with more (a first sentence, random junk) is hashed whole by ``features``. A text of new
    words thus costs up to twice what ``features`` costs when it is short (a few microseconds
    more) and about the same when long. Hand-written: the shipped model was trained on exactly
    these features and no library computes them;
    ``tests/unit/test_injection_features.py`` checks the equality on generated text.
    """

    def __init__(self, buckets: int, cache_size: int = 4096, new_per_text: int = 1) -> None:
        self._buckets = buckets
        self._mask = mask = buckets - 1
        self._cache_size = cache_size
        self._new_per_text = new_per_text
        self._tokens: dict[str, tuple[tuple[int, ...], tuple[str, ...], int]] = {}
        crc = zlib.crc32

        @lru_cache(maxsize=cache_size)
        def gap(window: bytes) -> tuple[int, ...]:
            # Seven bytes with the space between two tokens in the middle; its n-grams that have
            # the space strictly inside. 0xFF (never in UTF-8) marks what is outside the text.
            w = window
            if 0xFF not in w:
                return (
                    crc(w[2:5]) & mask,
                    crc(w[1:5]) & mask,
                    crc(w[2:6]) & mask,
                    crc(w[0:5]) & mask,
                    crc(w[1:6]) & mask,
                    crc(w[2:7]) & mask,
                )
            return tuple(
                crc(w[i : i + n]) & mask
                for n in _CHAR_N
                for i in range(5 - n, 3)
                if 0xFF not in w[i : i + n]
            )

        @lru_cache(maxsize=cache_size)
        def bigram(previous: str, word: str) -> int:
            return crc(f"b {previous} {word}".encode()) & mask

        self._gap = gap
        self._bigram = bigram

    def _learn(self, text: str) -> tuple[tuple[int, ...], tuple[str, ...], int]:
        """A token's own features: its character n-grams (with the spaces around it) and its
        words; also its length in bytes. Kept until the cache fills, then the cache starts over
        (bounded, and nothing to keep in order on the hot path)."""
        mask = self._mask
        crc = zlib.crc32
        padded = f" {text} ".encode()
        size = len(padded)
        found = {crc(padded[i : i + 3]) & mask for i in range(size - 2)}
        found.update([crc(padded[i : i + 4]) & mask for i in range(size - 3)])
        found.update([crc(padded[i : i + 5]) & mask for i in range(size - 4)])
        if text.isalnum():  # one word (``\\w`` is every alphanumeric and "_")
            words: tuple[str, ...] = (text,)
            found.add(crc(f"w {text}".encode()) & mask)
        else:
            words = tuple(_WORD.findall(text))
            found.update([crc(f"w {word}".encode()) & mask for word in words])
        entry = (tuple(found), words, size - 2)  # a tuple: a third of a set's memory
        if len(self._tokens) >= self._cache_size:
            self._tokens.clear()
        self._tokens[text] = entry
        return entry

    def __call__(self, text: str) -> set[int]:
        found: set[int] = set()
        folded = fold(text)
        if not folded:
            return found
        known = self._tokens.get
        gap = self._gap
        framed = b"\xff " + folded.encode() + b" \xff"  # the padded text, framed by 0xFF
        at = 1  # where the space before the current token is in ``framed``
        new = 0
        words: list[str] = []
        for item in folded.split(" "):
            cached = known(item)
            if cached is None:
                new += 1
                if new > self._new_per_text or len(item) > _LONGEST_CACHED:
                    return features(text, self._buckets)  # cheaper than learning it all
                cached = self._learn(item)
            chars, words_in, length = cached
            found.update(chars)
            words += words_in
            if at > 1:
                found.update(gap(framed[at - 3 : at + 4]))
            at += length + 1
        bigram = self._bigram
        previous = "<s>"
        for word in words:
            found.add(bigram(previous, word))
            previous = word
        return found

    def cache_sizes(self) -> dict[str, int]:
        """How many pieces each cache holds (bounded by ``cache_size``)."""
        return {
            "tokens": len(self._tokens),
            "gaps": self._gap.cache_info().currsize,
            "bigrams": self._bigram.cache_info().currsize,
        }


@dataclass(frozen=True, slots=True)
class HashedLinearModel:
    weights: list[int]  # one per bucket, from signed bytes (a list: indexed faster than an array)
    scale: float  # weight = byte * scale
    bias: float
    threshold: float  # the default decision threshold, chosen on the training data
    buckets: int
    extract: CachedFeatures  # the features of a text: ``features(text, buckets)``, cached

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
            signed = array("b")
            signed.frombytes(raw)
            buckets = int(meta["buckets"])
            if len(signed) != buckets or buckets & (buckets - 1):
                raise ModelLoadError("model weights do not match its bucket count")
            values = list(range(-128, 128))  # one int object per weight value, shared
            return cls(
                [values[w + 128] for w in signed],
                float(meta["scale"]),
                float(meta["bias"]),
                float(meta["threshold"]),
                buckets,
                CachedFeatures(buckets),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"the injection model could not be loaded: {exc}") from exc

    def score(self, text: str) -> float:
        """Probability-like score in [0, 1] that ``text`` is an injection."""
        found = self.extract(text)
        if not found:
            return 0.0
        total = sum(map(self.weights.__getitem__, found)) * self.scale / math.sqrt(len(found))
        z = self.bias + total
        if z < -30.0:  # exp() would overflow
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))
