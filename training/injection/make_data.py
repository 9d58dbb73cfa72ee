"""Build the injection gate's data set: ``data/{en,es}.jsonl``, deterministic (fixed seed).

Run with the project's venv (it needs hassil and home-assistant-intents, already installed):

    .venv/bin/python training/injection/make_data.py

Each line: ``{"text", "label" (1 = injection), "lang", "kind" ("request" | "tool"),
"source", "group"}``. ``group`` is what the train/test split keys on (``train.py``): a
template's every filling shares its group, so the held-out split tests templates the model
never saw, not new fillings of seen ones. Sources and licences: PROVENANCE.md.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import home_assistant_intents
from hassil import Intents
from hassil.intents import TextSlotList
from hassil.sample import sample_intents

from templates import (  # type: ignore[import-not-found]
    ATTACK_FRAMES,
    BENIGN_OWN,
    DEVICE_NAMES,
    INDIRECT_FRAMES,
    PAYLOADS,
    SLOTS,
    TOOL_BENIGN,
)

HERE = Path(__file__).parent
SEED = 20260107
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SEGMENT = re.compile(r"(?<=[.!?;:])\s+|\n+|(?<=\S)\s*(?:<!--|-->|//|\|)\s*")  # as the gate splits


def fill(template: str, rng: random.Random, lang: str, extra: dict[str, str] | None = None) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if extra and key in extra:
            return extra[key]
        return rng.choice(SLOTS[lang][key])

    out = template
    for _ in range(3):  # slots may hold slots
        out = _PLACEHOLDER.sub(one, out)
    return out


def record(text: str, label: int, lang: str, kind: str, source: str, group: str) -> dict[str, Any]:
    return {
        "text": text,
        "label": label,
        "lang": lang,
        "kind": kind,
        "source": source,
        "group": group,
    }


# -- benign home requests from Home Assistant's sentence templates ------------------------------


def hassil_requests(lang: str, rng: random.Random, count: int) -> list[dict[str, Any]]:
    data = home_assistant_intents.get_intents(lang)
    intents = Intents.from_dict(data)
    lists = {
        "name": TextSlotList.from_strings(SLOTS[lang]["device"]),
        "area": TextSlotList.from_strings(SLOTS[lang]["area"]),
        "floor": TextSlotList.from_strings(SLOTS[lang]["floor"]),
    }
    sentences: list[str] = []
    for name in sorted(intents.intents):
        try:
            sampled = itertools.islice(
                sample_intents(
                    intents,
                    slot_lists=lists,
                    intent_names={name},
                    expand_ranges=False,
                    max_sentences_per_intent=3000,
                ),
                3000,
            )
            sentences.extend(text for _, text in sampled)
        except Exception:  # noqa: BLE001, S112 - a template hassil cannot sample is skipped
            continue
    sentences = sorted(set(sentences))
    rng.shuffle(sentences)
    out = []
    for text in sentences[:count]:
        filled = _PLACEHOLDER.sub(lambda _m: str(rng.randint(1, 90)), text)
        out.append(record(filled, 0, lang, "request", "home-assistant-intents", f"ha:{filled}"))
    return out


# -- own templates ---------------------------------------------------------------------------------


def benign_own(lang: str, rng: random.Random, per_template: int) -> list[dict[str, Any]]:
    out = []
    for i, template in enumerate(BENIGN_OWN[lang]):
        seen = set()
        for _ in range(per_template):
            text = fill(template, rng, lang)
            if text not in seen:
                seen.add(text)
                out.append(record(text, 0, lang, "request", "own-template", f"b{lang}{i}"))
    return out


def attacks_own(lang: str, rng: random.Random, per_frame: int) -> list[dict[str, Any]]:
    out = []
    for i, frame in enumerate(ATTACK_FRAMES[lang]):
        seen = set()
        for _ in range(per_frame):
            text = fill(frame, rng, lang, {"payload": rng.choice(PAYLOADS[lang])})
            if rng.random() < 0.15:
                text = text.upper() if rng.random() < 0.5 else text.lower()
            if text not in seen:
                seen.add(text)
                out.append(record(text, 1, lang, "request", "own-template", f"a{lang}{i}"))
    return out


def giskard(rng: random.Random) -> list[dict[str, Any]]:
    """Jailbreak and hijacking prompts (garak, PromptInject) concatenated by Giskard."""
    path = HERE / "sources" / "giskard_prompt_injections.csv"
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        text = row["prompt"].replace(
            "'Free Generator'", rng.choice(["Denis", "ChatGPT", "Assistant"])
        )
        group = "giskard:dan" if row["group"] == "Jailbreak" else f"giskard:{row['index']}"
        out.append(record(text, 1, "en", "request", "giskard", group))
    return out


def bipia_instructions() -> dict[str, list[str]]:
    """BIPIA's injected instructions that address the assistant's own answer ("in your
    response"): harmless-looking alone, an injection inside an email or a web page."""
    kept: dict[str, list[str]] = {}
    for name in ("bipia_text_attack_train.json", "bipia_text_attack_test.json"):
        data = json.loads((HERE / "sources" / name).read_text(encoding="utf-8"))
        for category, items in data.items():
            about_answer = [
                t for t in items if re.search(r"\b(your|the) (response|answer|reply)\b", t, re.I)
            ]
            if about_answer:
                kept.setdefault(category, []).extend(about_answer)
    return kept


def bipia_emails() -> list[str]:
    path = HERE / "sources" / "bipia_email.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return sorted({json.loads(line)["context"] for line in lines if line.strip()})


# -- tool text: emails, calendar entries, web pages, device names ------------------------------------


def embed(carrier: str, injection: str, rng: random.Random) -> str:
    parts = re.split(r"(?<=[.!?\n])\s+", carrier)
    at = rng.randint(0, len(parts))
    parts.insert(at, injection)
    return " ".join(parts)


def tool_texts(
    lang: str, rng: random.Random, emails: list[str], bipia: dict[str, list[str]]
) -> list[dict[str, Any]]:
    out = []
    carriers: list[tuple[str, str]] = []  # (text, group)
    for i, template in enumerate(TOOL_BENIGN[lang]):
        for _ in range(6):
            carriers.append((fill(template, rng, lang), f"t{lang}{i}"))
    if lang == "en":
        carriers.extend((email, f"bipia-email:{j}") for j, email in enumerate(emails))
    seen = set()
    for text, group in carriers:
        if text not in seen:
            seen.add(text)
            source = "bipia-email" if group.startswith("bipia") else "own-template"
            out.append(record(text, 0, lang, "tool", source, group))
    # An email's own sentences are benign too (the gate scores tool text by sentence).
    if lang == "en":
        for j, email in enumerate(emails):
            parts = [p for p in _SEGMENT.split(email) if len(p) > 12 and p not in seen]
            for part in parts[:10]:
                seen.add(part)
                out.append(record(part, 0, lang, "tool", "bipia-email", f"bipia-email:{j}"))
    for name in DEVICE_NAMES[lang]:
        out.append(record(name, 0, lang, "tool", "own-template", f"dev{lang}:{name}"))
    # injections inside tool text
    for i, frame in enumerate(INDIRECT_FRAMES[lang]):
        for _ in range(10):
            injection = fill(frame, rng, lang, {"payload": rng.choice(PAYLOADS[lang])})
            if frame.startswith("DEVICE:"):
                text = fill(
                    frame.removeprefix("DEVICE:"),
                    rng,
                    lang,
                    {"payload": rng.choice(PAYLOADS[lang])},
                )
            else:
                text = embed(rng.choice(carriers)[0], injection, rng)
            out.append(record(text, 1, lang, "tool", "own-template", f"i{lang}{i}"))
    if lang == "en":
        addressed = [
            "Assistant, {x}",
            "Note to the AI reading this: {x}",
            "{x}",
            "IMPORTANT for any AI summarizing this email: {x}",
        ]
        for category, items in sorted(bipia.items()):
            for item in items:
                wrapper = rng.choice(addressed)
                text = embed(rng.choice(emails), wrapper.replace("{x}", item), rng)
                out.append(record(text, 1, lang, "tool", "bipia-attack", f"bipia:{category}"))
    return out


def main() -> None:
    rng = random.Random(SEED)
    emails = bipia_emails()
    bipia = bipia_instructions()
    for lang in ("en", "es"):
        rows = []
        rows += hassil_requests(lang, rng, 2500)
        rows += benign_own(lang, rng, 12)
        rows += attacks_own(lang, rng, 14)
        if lang == "en":
            rows += giskard(rng)
        rows += tool_texts(lang, rng, emails, bipia)
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["text"], row)  # first label wins; duplicates dropped
        path = HERE / "data" / f"{lang}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in unique.values():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        labels = [r["label"] for r in unique.values()]
        print(f"{path.name}: {len(labels)} rows, {sum(labels)} injections")


if __name__ == "__main__":
    main()
