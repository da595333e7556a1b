"""The comparison's records: its inputs (held-out photos, prices, training usage), one call's
outcome, the finished :class:`Comparison`, and its two errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agents.judge import JudgeRecord
    from finetune.bootstrap import Verdict
    from ingest.records import QAPair

Progress = Callable[[float, str], None]
Bar = Callable[..., Iterable]  # tqdm-like: bar(iterable, desc=..., unit=...)
# (images, one answer of the vision model) -> (input tokens, output tokens)
VisionTokens = Callable[[Sequence[bytes], str], tuple[int, int]]
# how many held-out items of a kind to compare on: a count, or the whole test split
Size = int | Literal["all"]
ALL = "all"


def size_problem(name: str, value: object) -> str | None:
    """What is wrong with ``value`` as a :data:`Size` (None: nothing).

    >>> size_problem("images", "all"), size_problem("images", 0)
    (None, None)
    >>> size_problem("images", -1)
    "images cannot be negative: use a whole number >= 0 or 'all', not -1"
    """
    if value == ALL or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    negative = isinstance(value, int) and not isinstance(value, bool)
    return f"{name}{' cannot be negative' if negative else ''}: use a whole number >= 0 or 'all', not {value!r}"


def parse_size(text: str | int) -> Size:
    """A size as a command line or a YAML file gives it: ``all`` or a whole number.

    >>> parse_size("ALL"), parse_size("12"), parse_size(3)
    ('all', 12, 3)
    """
    if isinstance(text, int):
        return text
    if text.strip().lower() == ALL:
        return ALL
    return int(text)


class CompareError(ValueError):
    """The comparison cannot start; the message names the input to fix."""


class ComparisonCancelled(RuntimeError):
    """``should_stop`` asked the comparison to stop."""


# The default hourly prices: on-demand, Linux, us-east-1, as quoted (for June 2026) by
# factualminds.com, "Amazon EC2 On-Demand Pricing: Instance Families, Regional Multipliers, and
# the Graviton Crossover (2026)", read from a stored copy of that page (its date unknown).
HARDWARE = {
    "cpu": "AWS EC2 m7g.large (2 Arm vCPU, 8 GiB)",
    "gpu": "AWS EC2 g5.xlarge (1 NVIDIA A10G, 4 vCPU)",
}
PRICE_SOURCE = (
    "on-demand Linux us-east-1 prices quoted by factualminds.com (Amazon EC2 On-Demand "
    "Pricing, 2026), read from a stored copy"
)


@dataclass(frozen=True)
class Prices:
    """What running and training the approaches costs (USD unless ``currency`` says otherwise).

    Self-hosted models (the text model on the in-process engine or transformers, the damage
    model, the vision-language model) are billed by compute: the wall-seconds of their calls x
    the hourly price of the hardware they ran on, ``cpu_per_hour`` (a 2-vCPU instance) or
    ``gpu_per_hour`` (one GPU instance; see ``HARDWARE`` and ``PRICE_SOURCE`` for the defaults).
    Hosted models (the text model behind an OpenAI-compatible server) are billed by tokens x
    ``text_input_per_1m`` / ``text_output_per_1m`` (defaults: the seed evaluation's
    gpt-4o-2024-08-06 prices, $2.5 / $10 per 1M). Training is billed by its wall time x the
    same hourly price; ``training_per_1m_tokens`` (the seed's $27.5 per 1M) and
    ``training_per_1k_images`` price the same training on a hosted fine-tuning service, shown
    beside it. Give your own with ``tunegraph compare --prices FILE.yaml`` (any subset of these
    keys) or ``--cpu-per-hour`` / ``--gpu-per-hour``.
    """

    cpu_per_hour: float = 0.0816
    gpu_per_hour: float = 1.006
    text_input_per_1m: float = 2.5
    text_output_per_1m: float = 10.0
    training_per_1m_tokens: float = 27.5
    training_per_1k_images: float = 0.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        negative = [
            f.name
            for f in dataclasses.fields(self)
            if f.name != "currency" and getattr(self, f.name) < 0
        ]
        if negative:
            raise ValueError(f"prices cannot be negative: {', '.join(negative)}")

    def per_hour(self, hardware: str) -> float:
        """The hourly price of ``hardware`` (``cpu`` or ``gpu``).

        >>> Prices().per_hour("gpu")
        1.006
        """
        if hardware not in HARDWARE:
            raise ValueError(f"unknown hardware {hardware!r}; use {' or '.join(HARDWARE)}")
        return getattr(self, f"{hardware}_per_hour")


@dataclass(frozen=True)
class TrainedModels:
    """The folders of the trained artifacts the approaches use (None: not trained yet)."""

    vision_lm: Path | None = None
    damage_model: Path | None = None
    text_adapter: Path | None = None


@dataclass(frozen=True)
class Training:
    """What went into training an approach's models (from their manifests): tokens, images,
    and the training loops' wall seconds (None: a manifest does not say)."""

    tokens: int = 0
    images: int = 0
    models: tuple[str, ...] = ()
    seconds: float | None = 0.0


@dataclass(frozen=True)
class PhotoCase:
    """A held-out photo and its annotation (damages as ``{"type", "part", "severity"}``)."""

    id: str
    image: bytes
    damages: tuple[dict[str, str], ...]
    overall: str | None = None
    cost: float | None = None


@dataclass(frozen=True)
class ClaimCase:
    """A held-out claim of the demo corpus: what a request says about it (``claim``, the
    fields of :class:`ingest.assessment.ClaimContext`), its photos, and its fraud label
    (``pattern``: the fraud pattern the generator used, "" for an honest claim)."""

    id: str
    images: tuple[bytes, ...]
    claim: dict[str, Any]
    fraud: bool
    pattern: str = ""


@dataclass
class Outcome:
    """One approach on one item. ``output``: the Assessment (JSON) or the answer text; None
    when the approach failed (``error`` says why). ``input_tokens`` / ``output_tokens``: every
    model's that were counted; what is billed: ``compute_s``, the wall seconds of the
    self-hosted models' calls, and ``hosted_input_tokens`` / ``hosted_output_tokens``, the
    hosted models' tokens."""

    output: Any = None
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    stopped: bool = True
    error: str | None = None
    compute_s: float = 0.0
    hosted_input_tokens: int = 0
    hosted_output_tokens: int = 0


def chat_records(questions: Sequence[QAPair], chats: dict[str, list[Outcome]]) -> list[JudgeRecord]:
    """Every chat answer as a judge reads it, mode by mode (the answer None: the call
    failed)."""
    from agents.judge import JudgeRecord

    return [
        JudgeRecord(q.question, q.answer, o.output, q.kind, mode, q.id, q.answerable)
        for mode, rows in chats.items()
        for q, o in zip(questions, rows, strict=True)
    ]


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
    verdicts: dict[str, list[Verdict]]  # "assessment" / "chat" / "fraud" -> one per metric
    prices: Prices = field(default_factory=Prices)
    hardware: str = "cpu"  # what the self-hosted models ran on: cpu | gpu
    claims: list[ClaimCase] = field(default_factory=list)
    frauds: dict[str, list[Outcome]] = field(default_factory=dict)  # approach -> one per claim
    fraud_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    concurrency: int = 1  # calls in flight at once (latency includes the wait for a turn)
    wall_s: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> name -> s
    judge: dict[str, Any] = field(default_factory=dict)  # JudgeReport.to_dict, no items

    def chat_records(self) -> list[JudgeRecord]:
        """Every chat answer as a judge reads it (mode, kind, question, reference, the answer:
        None when the call failed), mode by mode."""
        return chat_records(self.questions, self.chats)

    def to_dict(self) -> dict[str, Any]:
        def items(outcomes: dict[str, list[Outcome]], ids: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                name: [{**i, **dataclasses.asdict(o)} for i, o in zip(ids, rows, strict=True)]
                for name, rows in outcomes.items()
            }

        chat_items = [
            {
                "item": q.id,
                "kind": q.kind,
                "question": q.question,
                "reference": q.answer,
                "answerable": q.answerable,
            }
            for q in self.questions
        ]

        return {
            "photos": len(self.photos),
            "questions": len(self.questions),
            "prices": dataclasses.asdict(self.prices),
            "hardware": {
                "kind": self.hardware,
                "instance": HARDWARE[self.hardware],
                "per_hour": self.prices.per_hour(self.hardware),
            },
            "assessment_scores": self.assessment_scores,
            "per_class_delta": self.per_class_delta,
            "chat_scores": self.chat_scores,
            "claims": len(self.claims),
            "fraud_scores": self.fraud_scores,
            "concurrency": self.concurrency,
            "wall_s": self.wall_s,
            "judge": self.judge,
            "costs": self.costs,
            "verdicts": {
                k: [{**v.to_dict(), "text": verdict_text(v)} for v in vs]
                for k, vs in self.verdicts.items()
            },
            "items": {
                "assessment": items(self.assessments, [{"item": p.id} for p in self.photos]),
                "chat": items(self.chats, chat_items),
                "fraud": items(
                    self.frauds,
                    [{"item": c.id, "fraud": c.fraud, "pattern": c.pattern} for c in self.claims],
                ),
            },
        }


def verdict_text(v: Verdict) -> str:
    """How the report words a verdict: a winner only when the 95 % interval of its margin
    excludes 0.

    >>> from finetune.bootstrap import Verdict
    >>> close = Verdict("acc", True, {"a": 0.6, "b": 0.5}, "a", "b", True, 0.1, -0.05, 0.2)
    >>> verdict_text(close)
    'no significant difference (a ahead of b, the 95 % CI includes 0)'
    >>> verdict_text(Verdict("acc", True, {"a": 1.0, "b": 0.5}, "a", "b", False, 0.5, 0.3, 0.7))
    'a wins over b'
    """
    if v.best is None:
        return "not comparable (fewer than two approaches have a value)"
    if not v.tie:
        return f"{v.best} wins over {v.runner_up}"
    if v.margin == 0:
        return f"no significant difference ({v.best} = {v.runner_up})"
    return f"no significant difference ({v.best} ahead of {v.runner_up}, the 95 % CI includes 0)"
