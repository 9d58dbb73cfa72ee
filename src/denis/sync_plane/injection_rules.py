"""The injection gate's rule sets: which regular expressions the cheap first layer runs.

``DENIS_INJECTION_RULES`` picks one: ``default`` (``RULES``: the shapes of obvious attacks, tuned to let
home requests with trigger words through), ``strict`` (default plus broader patterns that also
catch a few odd but harmless sentences), ``off`` (no rules: the classifier decides alone), or a
path to a JSON or YAML file mapping rule names to regular expressions (English and Spanish;
matched case-insensitively). A file that cannot be read or compiled is a ``ValueError`` at
start, never a per-request failure.

``TOOL_RULES`` run on tool text only (calendar entries, emails, web pages, device names): text
written by someone else that speaks to the assistant ("AI: ...", "assistant, when you read
this ...") or carries chat-template markers has no business reaching an LLM.
"""

# ruff: noqa: E501 - one regular expression per line reads better than split fragments
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

__all__ = ["RULES", "STRICT_RULES", "TOOL_RULES", "load_rules"]

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


STRICT_RULES: dict[str, str] = {
    "override_loose_en": r"\b(?:ignore|disregard|forget|override)\b[^.!?\n]{0,30}\b(?:instructions?|rules|guidelines|programming|system prompt)\b",
    "override_loose_es": r"\b(?:ignora|olvida|omite|anula)\b[^.!?\n]{0,30}\b(?:instrucciones|reglas|directrices|normas|prompt)\b",
    "secret_en": r"\b(?:system|initial|hidden|original)\s+(?:prompt|instructions?)\b",
    "secret_es": r"\b(?:prompt|instrucciones)\s+(?:del sistema|ocult[oa]s|iniciales|originales)\b",
    "persona_names": r"\b(?:DAN|STAN|DUDE|AIM)\b\s*(?:mode|modo|:)",
    "no_rules_en": r"\b(?:no|without)\s+(?:any\s+)?(?:restrictions|filters|censorship|limits)\b",
    "no_rules_es": r"\bsin\s+(?:ning[uú]n\w*\s+)?(?:restricciones|filtros|censura|l[ií]mites)\b",
}

_AI = r"(?:assistant|ai|a\.i\.|llm|chatbot|denis|asistente|ia)"
_ACT = (
    r"(?:ignore|disregard|forget|override|unlock|disable|disarm|open|turn off|switch off|reveal|"
    r"print|repeat|send|forward|delete|ignora|olvida|anula|abre|desbloquea|desactiva|desarma|"
    r"apaga|revela|escribe|repite|env[ií]a|reenv[ií]a|borra)"
)

TOOL_RULES: dict[str, str] = {
    # Someone else's text addressing the AI, then telling it to act.
    "tool_addressed_ai": rf"\b{_AI}\b[^.!?\n]{{0,40}}?(?::|,|\bmust\b|\bdebe\b|\bdeben\b)\s*(?:please\s+|por favor\s+)?{_ACT}\b",
    "tool_when_you_read": r"\b(?:when|if|once)\s+you\s+(?:read|see|process|summari[sz]e)\s+this\b|\b(?:cuando|si)\s+(?:leas|veas|proceses|resumas)\s+esto\b",
    "tool_ai_reading": r"\b(?:ai|assistant|ia|asistente)s?\s+(?:reading|summari[sz]ing|processing|que lea|que resuma|que procese)",
    "tool_markers": r"<\|im_start\|>|<\|im_end\|>|\[/?INST\]|<</?SYS>>|</?system>|</?sistema>|\[system\]|\[sistema\]|\"role\"\s*:\s*\"system\"",
    "tool_ignore_user": r"\bignore\s+the\s+user\b|\bignora\s+al\s+usuario\b",
    "tool_new_instructions": r"\bnew\s+instructions\b|\bnuevas\s+instrucciones\b",
}


def load_rules(spec: str) -> dict[str, str]:
    """The rules ``spec`` names: ``default``, ``strict``, ``off`` or a JSON/YAML file path."""
    name = spec.strip().lower()
    if name in ("", "default"):
        return dict(RULES)
    if name == "strict":
        return {**RULES, **STRICT_RULES}
    if name == "off":
        return {}
    path = Path(spec).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"injection rules {spec!r} could not be read: {exc}") from exc
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
    ):
        raise ValueError(f"injection rules {spec!r}: expected a mapping of names to patterns")
    for rule, pattern in loaded.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"injection rule {rule!r} does not compile: {exc}") from exc
    return loaded
