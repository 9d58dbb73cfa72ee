"""The injection gate: rules, then a learned classifier, for English and Spanish; and the same
check for tool text (calendar entries, emails, web pages, device names) before it reaches an LLM.

A detector answers a ``GateVerdict``; the gate turns a block into ``InjectionBlockedError`` (403)
and a detector failure into ``DependencyUnavailableError`` (503), never a 500. The reason names
the layer that blocked (``rules``, ``classifier``) and never quotes the text.

Layers (``LayeredInjectionDetector``): the rules (``RULES``, or the set ``DENIS_INJECTION_RULES``
names, see ``injection_rules``) target the shape of an attack (override the instructions, reveal
the system prompt, drop the rules, take a new unrestricted persona), not single trigger words, so
"ignore my last message, I meant the bedroom" or "olvida la alarma anterior" pass; what they let
through is scored by the classifier (``injection_model``: hashed n-grams, a linear model trained
offline, plain Python) against ``DENIS_INJECTION_THRESHOLD``. Long texts are also scored sentence
by sentence, so an attack is not diluted by the text around it. ``check_tool_text`` adds rules for
text that addresses the AI and answers layer ``tool_text``; it never raises on a block (the
caller drops or renames what is flagged) and fails closed (flagged) if the detector breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from denis.errors import DependencyUnavailableError, InjectionBlockedError
from denis.resilience import Signal, Signals
from denis.sync_plane.injection_model import HashedLinearModel
from denis.sync_plane.injection_rules import RULES, TOOL_RULES, load_rules

__all__ = [
    "GateVerdict",
    "InjectionDetector",
    "InjectionGate",
    "LayeredInjectionDetector",
    "RuleInjectionDetector",
    "build_detector",
]

_log = structlog.get_logger("denis.sync_plane")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+|(?<=\S)\s*(?:<!--|-->|//|\|)\s*")
_SEGMENT_FROM_CHARS = 120  # a user text longer than this is also scored sentence by sentence


@dataclass(frozen=True, slots=True)
class GateVerdict:
    blocked: bool
    score: float
    layer: str
    rule: str | None = None


class InjectionDetector(Protocol):
    def inspect(self, text: str) -> GateVerdict: ...


_RULE_FLAGS = re.IGNORECASE | re.DOTALL
# ``\s`` in Unicode mode, not in ASCII mode: a text holding one takes the Unicode patterns
_UNICODE_ONLY_SPACES = re.compile(r"[\x1c-\x1f]")


def _ascii_twins(
    rules: list[tuple[str, re.Pattern[str]]],
) -> list[tuple[str, re.Pattern[str]]] | None:
    """The same patterns in ASCII mode, or None when they might not answer alike on ASCII text.

    On a text of ASCII characters only (and none of the four separators ``\\s`` takes only in
    Unicode mode) a pattern gives the same verdict in ASCII mode, where case folding and ``\\w``,
    ``\\b``, ``\\s`` need no Unicode tables (about 40 % faster over the default rules), unless the
    pattern names a non-ASCII character that matches an ASCII letter when cases are ignored:
    only U+0130, U+0131, U+017F and U+212A do (``tests/unit/test_injection_gate.py`` checks it),
    all above U+00FF. So a rule set gets twins only if every pattern is written in characters up
    to U+00FF, without ``\\u``, ``\\U`` or ``\\N`` escapes, and compiles in ASCII mode."""
    twins = []
    for name, pattern in rules:
        source = pattern.pattern
        if max(map(ord, source), default=0) > 0xFF or any(
            escape in source for escape in ("\\u", "\\U", "\\N")
        ):
            return None
        try:
            twins.append((name, re.compile(source, _RULE_FLAGS | re.ASCII)))
        except (re.error, ValueError):  # an inline (?u): "ASCII and UNICODE flags are incompatible"
            return None
    return twins


class RuleInjectionDetector:
    layer = "rules"

    def __init__(self, rules: dict[str, str] | None = None) -> None:
        source = RULES if rules is None else rules
        self._rules = [(name, re.compile(rx, _RULE_FLAGS)) for name, rx in source.items()]
        self._ascii_rules = _ascii_twins(self._rules)
        self._passed = GateVerdict(blocked=False, score=0.0, layer=self.layer)  # frozen: shared

    def inspect(self, text: str) -> GateVerdict:
        rules = self._rules
        if (
            self._ascii_rules is not None
            and text.isascii()
            and not _UNICODE_ONLY_SPACES.search(text)
        ):
            rules = self._ascii_rules
        for name, pattern in rules:
            if pattern.search(text):
                return GateVerdict(blocked=True, score=1.0, layer=self.layer, rule=name)
        return self._passed


class LayeredInjectionDetector:
    """Rules first (cheap, certain), then the classifier on what they let through."""

    def __init__(
        self,
        rules: RuleInjectionDetector,
        model: HashedLinearModel | None,
        threshold: float | None = None,
    ) -> None:
        self._rules = rules
        self._tool_rules = RuleInjectionDetector(TOOL_RULES)
        self._model = model
        self.threshold = threshold if threshold is not None else (model.threshold if model else 1.0)

    def inspect(self, text: str) -> GateVerdict:
        verdict = self._rules.inspect(text)
        if verdict.blocked or self._model is None:
            return verdict
        return self._classify(text, segments=len(text) > _SEGMENT_FROM_CHARS)

    def inspect_tool_text(self, text: str) -> GateVerdict:
        for rules in (self._rules, self._tool_rules):
            verdict = rules.inspect(text)
            if verdict.blocked:
                return replace(verdict, layer="tool_text")
        if self._model is None:
            return GateVerdict(blocked=False, score=0.0, layer="tool_text")
        return replace(self._classify(text, segments=True), layer="tool_text")

    def _classify(self, text: str, *, segments: bool) -> GateVerdict:
        model = self._model
        assert model is not None  # noqa: S101 - callers check
        score = model.score(text)
        if segments and score < self.threshold:
            for part in _SENTENCE.split(text):
                if len(part) > 12 and part != text:  # a few words at least
                    score = max(score, model.score(part))
                    if score >= self.threshold:
                        break
        blocked = score >= self.threshold
        return GateVerdict(blocked, round(score, 4), "classifier", "model" if blocked else None)


def build_detector(
    rules: str = "default", threshold: float | None = None
) -> LayeredInjectionDetector:
    """The gate's detector from its settings: the rule set's name (or file) and the threshold
    (None: the one chosen when the model was trained). Raises at start if either is broken."""
    return LayeredInjectionDetector(
        RuleInjectionDetector(load_rules(rules)), HashedLinearModel.load(), threshold
    )


class InjectionGate:
    def __init__(self, detector: InjectionDetector, signals: Signals) -> None:
        self._detector = detector
        self._signals = signals

    def check(self, text: str) -> GateVerdict:
        try:
            verdict = self._detector.inspect(text)
        except Exception as exc:
            raise DependencyUnavailableError(
                "the safety check could not run; please try again", dependency="injection_gate"
            ) from exc
        if verdict.blocked:
            self._signals.emit(
                Signal.GATE_INJECTION_BLOCKED, layer=verdict.layer, rule=verdict.rule
            )
            raise InjectionBlockedError(
                "this message looks like an attempt to override Denis's instructions "
                f"(blocked by the {verdict.layer} layer); rephrase it as a request"
            )
        return verdict

    def check_tool_text(self, text: str) -> GateVerdict:
        """Screen text from a tool (an email, a calendar entry, a web page, a device name) before
        it goes to an LLM. Never raises: a blocked verdict is for the caller to drop the text."""
        try:
            inspect_tool = getattr(self._detector, "inspect_tool_text", None)
            if inspect_tool is not None:
                verdict: GateVerdict = inspect_tool(text)
            else:
                verdict = replace(self._detector.inspect(text), layer="tool_text")
        except Exception as exc:  # noqa: BLE001 - a broken detector flags the text, loudly
            _log.warning("gate.tool_text_check_failed", error=type(exc).__name__)
            return GateVerdict(blocked=True, score=1.0, layer="tool_text", rule="detector_failed")
        if verdict.blocked:
            _log.info("gate.tool_text_blocked", rule=verdict.rule, score=verdict.score)
        return verdict
