"""The Assessment both approaches return, and the claim context a request may carry.

Pydantic models, so that the same class validates model output, types graph state, is the JSON
schema for constrained decoding and documents the API. Vocabulary comes from ``ingest.taxonomy``.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DamageType = Literal["dent", "scratch", "crack", "glass_shatter", "lamp_broken", "tire_flat"]
Part = Literal[
    "front_bumper",
    "rear_bumper",
    "hood",
    "trunk_lid",
    "front_fender",
    "front_door",
    "rear_door",
    "rear_quarter_panel",
    "side_mirror",
    "windshield",
    "rear_window",
    "side_window",
    "headlamp",
    "tail_lamp",
    "front_tire",
    "rear_tire",
]
Severity = Literal["minor", "moderate", "severe"]
OverallSeverity = Literal["minor", "moderate", "severe", "total_loss"]
Action = Literal["repair", "replace", "refinish"]
Approach = Literal["finetuned", "agentic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Damage(_Strict):
    type: DamageType
    part: Part
    severity: Severity
    bbox: list[float] | None = Field(default=None, description="[x, y, w, h] in pixels")
    image: int | None = Field(
        default=None, ge=0, description="which photo (0-based, as sent) the bbox is in"
    )
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _box(self) -> Damage:
        if self.bbox is not None and len(self.bbox) != 4:
            raise ValueError("bbox must be [x, y, w, h]")
        return self


class CostEstimate(_Strict):
    min: float = Field(ge=0)
    max: float = Field(ge=0)
    currency: str = "USD"

    @model_validator(mode="after")
    def _ordered(self) -> CostEstimate:
        if self.max < self.min:
            raise ValueError("cost_estimate.max is below cost_estimate.min")
        return self


class RepairRecommendation(_Strict):
    part: Part
    action: Action
    reference: str = ""


class Fraud(_Strict):
    risk: float = Field(ge=0.0, le=1.0)
    level: Literal["low", "medium", "high"]
    signals: list[str] = Field(default_factory=list)


class Evidence(_Strict):
    source: Literal["manual", "claims"]
    id: str
    score: float = 0.0


class VisionAnswer(BaseModel):
    """What the fine-tuned vision-language model answers (JSON): the Assessment's photo
    fields."""

    damages: list[Damage]
    overall_severity: OverallSeverity
    cost_estimate: CostEstimate
    repair_recommendations: list[RepairRecommendation] = Field(default_factory=list)
    report: str = ""


class Assessment(_Strict):
    approach: Approach
    damages: list[Damage]
    overall_severity: OverallSeverity
    cost_estimate: CostEstimate
    repair_recommendations: list[RepairRecommendation] = Field(default_factory=list)
    fraud: Fraud
    report: str = ""
    evidence: list[Evidence] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)


class ClaimContext(_Strict):
    """What a request may say about the claim behind the photos (all optional)."""

    policy_id: str | None = None
    vin: str | None = None
    incident_date: date | None = None
    description: str | None = None
    claimed_amount: float | None = Field(default=None, ge=0)


def fraud_level(risk: float) -> Literal["low", "medium", "high"]:
    """Map a risk in [0, 1] to its level.

    >>> fraud_level(0.1), fraud_level(0.4), fraud_level(0.8)
    ('low', 'medium', 'high')
    """
    if risk >= 0.6:
        return "high"
    return "medium" if risk >= 0.3 else "low"
