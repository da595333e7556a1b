"""The comparison's records: its inputs (held-out photos, prices, training usage), one call's
outcome, the finished :class:`Comparison`, and its two errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finetune.bootstrap import Verdict
    from ingest.records import QAPair

Progress = Callable[[float, str], None]
Bar = Callable[..., Iterable]  # tqdm-like: bar(iterable, desc=..., unit=...)
# (images, one answer of the vision model) -> (input tokens, output tokens)
VisionTokens = Callable[[Sequence[bytes], str], tuple[int, int]]


class CompareError(ValueError):
    """The comparison cannot start; the message names the input to fix."""


class ComparisonCancelled(RuntimeError):
    """``should_stop`` asked the comparison to stop."""


@dataclass(frozen=True)
class Prices:
    """The price table for cost estimates (USD unless ``currency`` says otherwise).

    Defaults are the seed evaluation's illustrative cloud prices (gpt-4o-2024-08-06, East US 2,
    Sept 2025: $2.5 / $10 per 1M input / output tokens, $27.5 per 1M training tokens, $1.7 per
    hosting hour) so that the approaches' costs can be told apart; they are not what running
    the embedded models costs. Give your own with ``tunegraph compare --prices FILE.yaml``
    (any subset of these keys).
    """

    text_input_per_1m: float = 2.5  # the text model: report writer, service chat
    text_output_per_1m: float = 10.0
    vision_input_per_1m: float = 2.5  # the vision-language model (fine-tuned assessment)
    vision_output_per_1m: float = 10.0
    training_per_1m_tokens: float = 27.5
    training_per_1k_images: float = 0.0  # image models trained on pictures, not tokens
    hosting_per_hour: float = 1.7
    currency: str = "USD"

    def __post_init__(self) -> None:
        negative = [
            f.name
            for f in dataclasses.fields(self)
            if f.name != "currency" and getattr(self, f.name) < 0
        ]
        if negative:
            raise ValueError(f"prices cannot be negative: {', '.join(negative)}")


@dataclass(frozen=True)
class TrainedModels:
    """The folders of the trained artifacts the approaches use (None: not trained yet)."""

    vision_lm: Path | None = None
    damage_model: Path | None = None
    text_adapter: Path | None = None


@dataclass(frozen=True)
class Training:
    """What went into training an approach's models (from their manifests)."""

    tokens: int = 0
    images: int = 0
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class PhotoCase:
    """A held-out photo and its annotation (damages as ``{"type", "part", "severity"}``)."""

    id: str
    image: bytes
    damages: tuple[dict[str, str], ...]
    overall: str | None = None
    cost: float | None = None


@dataclass
class Outcome:
    """One approach on one item. ``output``: the Assessment (JSON) or the answer text; None
    when the approach failed (``error`` says why)."""

    output: Any = None
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    stopped: bool = True
    error: str | None = None


@dataclass
class Comparison:
    """Everything the report shows; :meth:`to_dict` is its JSON form."""

    photos: list[PhotoCase]
    questions: list[QAPair]
    assessments: dict[str, list[Outcome]]
    chats: dict[str, list[Outcome]]
    assessment_scores: dict[str, dict[str, Any]]
    per_class_delta: dict[str, dict[str, float]]  # fine-tuned minus agentic, per class
    chat_scores: dict[str, dict[str, Any]]
    costs: dict[str, dict[str, dict[str, Any]]]  # "assessment" / "chat" -> approach -> cost
    verdicts: dict[str, list[Verdict]]  # "assessment" / "chat" -> one per metric
    prices: Prices = field(default_factory=Prices)

    def to_dict(self) -> dict[str, Any]:
        def items(outcomes: dict[str, list[Outcome]], ids: list[str]) -> dict[str, Any]:
            return {
                name: [{"item": i, **dataclasses.asdict(o)} for i, o in zip(ids, rows, strict=True)]
                for name, rows in outcomes.items()
            }

        return {
            "photos": len(self.photos),
            "questions": len(self.questions),
            "prices": dataclasses.asdict(self.prices),
            "assessment_scores": self.assessment_scores,
            "per_class_delta": self.per_class_delta,
            "chat_scores": self.chat_scores,
            "costs": self.costs,
            "verdicts": {k: [v.to_dict() for v in vs] for k, vs in self.verdicts.items()},
            "items": {
                "assessment": items(self.assessments, [p.id for p in self.photos]),
                "chat": items(self.chats, [q.id for q in self.questions]),
            },
        }
