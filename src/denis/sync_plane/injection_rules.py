"""The injection gate's rule sets: which regular expressions the cheap first layer runs.

``DENIS_INJECTION_RULES`` picks one: ``default`` (the shapes of obvious attacks, tuned to let
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

__all__ = ["STRICT_RULES", "TOOL_RULES", "load_rules"]

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


def load_rules(spec: str, default: dict[str, str]) -> dict[str, str]:
    """The rules ``spec`` names: ``default``, ``strict``, ``off`` or a JSON/YAML file path."""
    name = spec.strip().lower()
    if name in ("", "default"):
        return dict(default)
    if name == "strict":
        return {**default, **STRICT_RULES}
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
