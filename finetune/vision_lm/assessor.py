"""The fine-tuned approach's model as the agents see it: photos in, one merged answer out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ingest.images import Photo, pictures
from ingest.taxonomy import OVERALL_SEVERITIES, SEVERITIES

if TYPE_CHECKING:
    from finetune.vision_lm.loading import ImageTextToTextLM, VisionLM

RETRY_TEMPERATURE = 0.7


class VisionLMAssessor:
    """The fine-tuned approach's model (``agents.context.VisionAssessor``): photos -> the
    Assessment's photo fields (the merged JSON; the raw text when an answer was cut off).

    Each photo is answered on its own (the model is trained on single photos) in one batch, and
    the answers are merged: every damage seen (a part's worst severity per type), the worst
    overall severity, and the estimate of the costliest photo — several photos of one incident
    usually show the same damage from different angles, so the estimates are not summed.
    """

    def __init__(self, model: VisionLM | ImageTextToTextLM) -> None:
        self.model = model
        self.name = model.name

    def assess(
        self, images: Sequence[Photo | bytes], claim: Any = None, feedback: str | None = None
    ) -> str | dict[str, Any]:
        # The model reads photos only: the claim context is not part of its prompt. Its answer
        # always parses, but can break a rule the grammar cannot state (a cost range's max
        # below its min); asked again (``feedback``), it samples instead of answering greedily.
        generated = self.model.answer(
            pictures(images), temperature=RETRY_TEMPERATURE if feedback else 0
        )
        answers = [json.loads(g.text) for g in generated if g.complete]
        if not answers:
            return generated[0].text  # cut off: the graph reports it as invalid
        return merge_answers(answers)


def merge_answers(answers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several photos' answers as one (see :class:`VisionLMAssessor`).

    >>> a = {"damages": [{"type": "dent", "part": "hood", "severity": "minor"}],
    ...      "overall_severity": "minor", "cost_estimate": {"min": 100, "max": 200},
    ...      "repair_recommendations": [{"part": "hood", "action": "repair"}]}
    >>> b = {"damages": [{"type": "dent", "part": "hood", "severity": "severe"}],
    ...      "overall_severity": "severe", "cost_estimate": {"min": 150, "max": 900},
    ...      "repair_recommendations": [{"part": "hood", "action": "replace"}]}
    >>> merged = merge_answers([a, b])
    >>> merged["damages"], merged["overall_severity"], merged["cost_estimate"]
    ([{'type': 'dent', 'part': 'hood', 'severity': 'severe'}], 'severe', {'min': 150, 'max': 900})
    """
    damages: dict[tuple[str, str], dict[str, Any]] = {}
    repairs: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for damage in answer["damages"]:
            key = (damage["part"], damage["type"])
            seen = damages.get(key)
            if seen is None or SEVERITIES.index(damage["severity"]) > SEVERITIES.index(
                seen["severity"]
            ):
                damages[key] = damage
                repairs.update(
                    {r["part"]: r for r in answer["repair_recommendations"] if r["part"] == key[0]}
                )
        for repair in answer["repair_recommendations"]:
            repairs.setdefault(repair["part"], repair)
    return {
        "damages": list(damages.values()),
        "overall_severity": max(
            (a["overall_severity"] for a in answers), key=OVERALL_SEVERITIES.index
        ),
        "cost_estimate": max((a["cost_estimate"] for a in answers), key=lambda c: c["max"]),
        "repair_recommendations": list(repairs.values()),
    }
