"""Prompts. Chat questions use the fine-tuning format (same system prompt, task prefix, and
"Manual excerpts:" block) so that the fine-tuned model sees at inference what it saw in training."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from finetune.datasets import SYSTEM_PROMPT
from finetune.evaluation import manual_messages

_PREFIX = re.compile(r"^\[(SPEC|PROCEDURE|EXPLANATION|WIRING|TROUBLESHOOTING)\]")
_KIND_WORDS = (
    ("TROUBLESHOOTING", r"\b[PBCU]\d{4}\b|fault|code|symptom|diagnos|won't|does not start"),
    ("WIRING", r"\bpin\b|connector|wire|wiring|circuit|fuse|harness"),
    ("SPEC", r"torque|capacity|pressure|gap|clearance|how much|how many|\bspec|what is the .* of"),
    ("PROCEDURE", r"how do i|how to|procedure|steps?|replace|remove|install|bleed|adjust"),
)

AGENT_PROMPT = (
    SYSTEM_PROMPT
    + " Use the tools to find the manual's exact words before answering; answer briefly and "
    "give values with their units."
)
REPORT_PROMPT = (
    "You write the damage assessment report of an insurance claim. Use only the facts given; "
    "cite the evidence ids you rely on."
)


def task_prefix(question: str) -> str:
    """The training task prefix that fits a question (one it already carries wins).

    >>> task_prefix("What is the wheel nut torque?"), task_prefix("[WIRING] Pin 3?")
    ('SPEC', 'WIRING')
    """
    if match := _PREFIX.match(question.strip()):
        return match.group(1)
    lowered = question.lower()
    for kind, pattern in _KIND_WORDS:
        if re.search(pattern, lowered if kind != "TROUBLESHOOTING" else question, re.I):
            return kind
    return "EXPLANATION"


def manual_question(question: str, context: Sequence[str] = ()) -> list[dict[str, str]]:
    """System prompt + prefixed question (+ retrieved blocks), as in fine-tuning and eval."""
    question = question.strip()
    kind = task_prefix(question)
    return manual_messages(kind, _PREFIX.sub("", question).strip(), context)


def report_messages(facts: dict[str, Any], feedback: str | None = None) -> list[dict[str, str]]:
    user = "Facts (JSON):\n" + json.dumps(facts, indent=1, default=str)
    user += "\n\nWrite a short report: damages, cost range, repairs, fraud signals."
    if feedback:
        user += f"\n\nYour previous answer was rejected: {feedback}. Answer again."
    return [{"role": "system", "content": REPORT_PROMPT}, {"role": "user", "content": user}]
