"""The injection gate: a first, rule-based detector for English and Spanish.

A detector answers a ``GateVerdict``; the gate turns a block into ``InjectionBlockedError`` (403)
and a detector failure into ``DependencyUnavailableError`` (503), never a 500. Rules target the
shape of an attack (override the instructions, reveal the system prompt, drop the rules, take a
new unrestricted persona), not single trigger words, so "ignore my last message, I meant the
bedroom" or "olvida la alarma anterior" pass. A later issue adds a learned layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from denis.errors import DependencyUnavailableError, InjectionBlockedError
from denis.resilience import Signal, Signals

__all__ = ["GateVerdict", "InjectionDetector", "InjectionGate", "RuleInjectionDetector"]


@dataclass(frozen=True, slots=True)
class GateVerdict:
    blocked: bool
    score: float
    layer: str
    rule: str | None = None


class InjectionDetector(Protocol):
    def inspect(self, text: str) -> GateVerdict: ...


_PRIOR_EN = r"(?:previous|prior|above|earlier|preceding|original|system|initial)"
_RULES_EN = r"(?:instructions?|prompts?|rules|directives|guidelines|constraints|programming)"
_PRIOR_ES = r"(?:anteriores|previas|previos|originales|iniciales|del sistema|de arriba)"
_RULES_ES = r"(?:instrucciones|indicaciones|reglas|[oó]rdenes|directrices|restricciones)"

RULES: dict[str, str] = {
    "override_en": (
        rf"\b(?:ignore|disregard|forget|override|bypass|skip)\b(?:\s+\w+){{0,3}}?\s+{_PRIOR_EN}"
        rf"(?:\s+\w+){{0,2}}?\s+{_RULES_EN}"
    ),
    "override_all_en": rf"\b(?:ignore|disregard|forget)\s+(?:all|every|any)\s+(?:of\s+)?(?:your|the)\s+{_RULES_EN}",
    "reveal_en": (
        r"\b(?:reveal|show|print|repeat|tell me|output|leak|display)\b(?:\s+\w+){0,3}?\s+"
        r"(?:system|hidden|secret|initial|original)\s+(?:prompt|instructions?|message)"
    ),
    "persona_en": (
        r"\b(?:you are now|from now on,? you are|pretend (?:that )?you (?:are|have) no|act as if you have no)"
        r"\b.*\b(?:restrictions?|rules|limits|filters|guidelines|unfiltered|jailbroken|DAN)\b"
    ),
    "mode_en": r"\b(?:developer|god|jailbreak|DAN|unrestricted)\s+mode\b",
    "ask_prompt_en": r"\bwhat(?:'s|\s+is|\s+are|\s+were)\s+(?:your|the)\s+(?:system|hidden|secret|initial|original)\s+(?:prompt|instructions?)\b",
    # Role-play is fine ("you are a pirate telling me the weather"); role-play without rules is not.
    "roleplay_en": (
        r"\b(?:pretend|imagine|role-?play|let's play|act as)\b.*"
        r"\b(?:(?:no|without|free of|free from)\s+(?:\w+\s+){0,2}?(?:restrictions?|rules|limits|filters|guidelines|censorship)|unfiltered|uncensored|jailbroken)\b"
    ),
    "override_es": (
        rf"\b(?:ignora|ignorad|ignore|olvida|olvidad|olvide|omite|salta|desobedece)\b(?:\s+\w+){{0,3}}?\s+"
        rf"{_RULES_ES}(?:\s+\w+){{0,2}}?\s+{_PRIOR_ES}"
    ),
    "override_all_es": rf"\b(?:ignora|olvida|omite)\s+(?:todas?|cualquier)\s+(?:las\s+|tus\s+)?{_RULES_ES}",
    "reveal_es": (
        r"\b(?:revela|muestra|mu[eé]strame|imprime|repite|dime|ens[eé][ñn]ame)\b(?:\s+\w+){0,3}?\s+"
        r"(?:prompt|instrucciones|mensaje)\s+(?:del sistema|de sistema|ocult[oa]s?|secret[oa]s?|inicial(?:es)?|original(?:es)?)"
    ),
    "ask_prompt_es": r"\bcu[aá]l(?:es)?\s+(?:es|son|era|eran)\s+(?:tu|tus|el|las)\s+(?:prompt|instrucciones)\s+(?:del sistema|de sistema|ocult[oa]s?|secret[oa]s?|inicial(?:es)?|original(?:es)?)",
    "roleplay_es": (
        r"\b(?:finge|fingid|imagina|haz de cuenta|hagamos de cuenta|juguemos a|act[uú]a como|comp[oó]rtate como)\b.*"
        r"\b(?:sin|ningun[ao]s?)\s+(?:\w+\s+){0,2}?(?:restricciones|reglas|l[ií]mites|filtros|censura)\b"
    ),
    "persona_es": (
        r"\b(?:ahora eres|a partir de ahora eres|finge que no tienes|act[uú]a como si no tuvieras)"
        r"\b.*\b(?:restricciones|reglas|l[ií]mites|filtros|censura)\b"
    ),
    "mode_es": r"\bmodo\s+(?:desarrollador|dios|sin restricciones|jailbreak|DAN)\b",
}


class RuleInjectionDetector:
    layer = "rules"

    def __init__(self, rules: dict[str, str] | None = None) -> None:
        source = RULES if rules is None else rules
        self._rules = [
            (name, re.compile(rx, re.IGNORECASE | re.DOTALL)) for name, rx in source.items()
        ]
        self._passed = GateVerdict(blocked=False, score=0.0, layer=self.layer)  # frozen: shared

    def inspect(self, text: str) -> GateVerdict:
        for name, pattern in self._rules:
            if pattern.search(text):
                return GateVerdict(blocked=True, score=1.0, layer=self.layer, rule=name)
        return self._passed


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
