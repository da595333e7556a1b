"""``tunegraph compare`` as one function a command or a job can call: held-out items from the
demo corpus, the graphs' context from settings, :func:`agents.compare.run.run_comparison`, then the
report in ``TUNEGRAPH_HOME/runs/NAME``."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api import composition
from api.settings import Settings

if TYPE_CHECKING:
    from agents.compare.run import Bar, Comparison, PhotoCase, Prices, Progress, Training
    from agents.context import AgentContext
    from ingest.records import QAPair

MANIFEST = "tunegraph-manifest.json"
# The unit of the bar `tunegraph compare --json` moves from 0 to PROGRESS_STEPS over the whole
# comparison: what a compare job reports as its progress (see api.jobs.worker).
PROGRESS_UNIT = "comparison"
PROGRESS_STEPS = 1000


class CompareError(ValueError):
    """The comparison cannot start; the message names the input to fix."""


@dataclass(frozen=True)
class CompareOptions:
    """What to compare on. ``images`` / ``questions``: seeded samples of the demo's test photos
    and test questions (0 skips that task); ``prices``: a YAML price table (see
    :class:`agents.compare.run.Prices`); ``resamples``: bootstrap resamples per metric;
    ``max_tokens``: a cap on every text-model answer (chat and assessment reports; None: the
    model's own default)."""

    name: str = "compare"
    images: int = 24
    questions: int = 40
    prices: Path | None = None
    seed: int = 0
    resamples: int = 1000
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name) or self.name.startswith("."):
            problems.append("name: use 1-64 letters, digits, '.', '_' or '-'")
        for key in ("images", "questions"):
            if getattr(self, key) < 0:
                problems.append(f"{key} cannot be negative")
        if self.resamples < 100:
            problems.append("resamples: use at least 100")
        if self.max_tokens is not None and self.max_tokens < 1:
            problems.append("max_tokens: use at least 1")
        if problems:
            raise CompareError("; ".join(problems))


@dataclass
class CompareResult:
    out: Path
    files: dict[str, Path]
    comparison: Comparison


def run_compare(
    settings: Settings,
    options: CompareOptions,
    *,
    context_factory: Callable[[Settings], AgentContext] = composition.agent_context,
    progress: Progress | None = None,
    bar: Bar | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CompareResult:
    """Compare the approaches on the demo's held-out items and write the report to
    ``settings.runs_dir / options.name`` (report.md, report.html, report.json, PNG plots).

    Raises :class:`CompareError` for bad input and
    :class:`agents.compare.run.ComparisonCancelled` when ``should_stop()`` turns true.
    """
    from agents.compare.report import write_report
    from agents.compare.run import ASSESSMENT_GRAPHS, CHAT_MODES, run_comparison
    from finetune.metrics import known_numbers

    prices = load_prices(options.prices)
    demo = settings.demo_dir
    photos = photo_cases(demo, options.images, options.seed) if options.images else []
    questions = held_out_questions(demo, options.questions, options.seed)
    blocks = demo / "manual" / "blocks.jsonl"
    known = known_numbers(json.loads(line)["text"] for line in _lines(blocks))
    if progress:
        progress(0.0, "loading the models")
    context = context_factory(settings)
    if options.max_tokens and context.llm is not None:
        capped = context.llm.model_copy(update={"max_tokens": options.max_tokens})
        context = replace(context, llm=capped)
    comparison = run_comparison(
        context,
        photos,
        questions,
        known_numbers=known,
        prices=prices,
        training=training_usage(settings),
        approaches=tuple(ASSESSMENT_GRAPHS) if photos else (),
        modes=CHAT_MODES if questions else (),
        vision_tokens=vision_token_counter(context.vision),
        progress=progress,
        bar=bar,
        should_stop=should_stop,
        resamples=options.resamples,
        seed=options.seed,
    )
    out = settings.runs_dir / options.name
    title = f"tunegraph compare: {options.name}"
    files = write_report(comparison, out, title)
    return CompareResult(out, files, comparison)


def load_prices(path: Path | None) -> Prices:
    """The default price table, with a YAML file's values on top; unknown keys are errors that
    list the valid ones."""
    from agents.compare.run import Prices
    from finetune.config import ConfigError, load_config

    try:
        return load_config(Prices, path)
    except ConfigError as exc:
        valid = ", ".join(f.name for f in fields(Prices))
        raise CompareError(f"--prices: {exc} (keys: {valid})") from None


def photo_cases(demo_dir: Path, n: int, seed: int = 0) -> list[PhotoCase]:
    """A seeded sample of ``n`` photos of the demo's test split with their annotations."""
    from agents.compare.run import PhotoCase
    from finetune.vision_datasets import VisionDataError, damage_examples

    try:
        examples, _ = damage_examples("test", demo_dir=demo_dir)
    except VisionDataError as exc:
        raise CompareError(str(exc)) from None
    if n < len(examples):
        examples = sorted(random.Random(seed).sample(examples, n), key=lambda e: e.image_id)
    return [
        PhotoCase(
            id=e.path.name,
            image=e.path.read_bytes(),
            damages=tuple(
                {"type": d.type, "part": d.part, "severity": d.severity} for d in e.damages
            ),
            overall=e.severity,
            cost=e.cost,
        )
        for e in examples
    ]


def held_out_questions(demo_dir: Path, n: int, seed: int = 0) -> list[QAPair]:
    """A seeded sample of ``n`` of the demo's test questions (as ``tunegraph eval text``)."""
    from ingest.records import QAPair

    if n == 0:
        return []
    path = demo_dir / "manual" / "qa" / "test.jsonl"
    try:
        items = [QAPair(**json.loads(line)) for line in _lines(path)]
    except (ValueError, TypeError) as exc:
        raise CompareError(f"{path}: cannot read the questions ({exc})") from None
    if n < len(items):
        items = sorted(random.Random(seed).sample(items, n), key=lambda q: q.id)
    return items


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise CompareError(f"{path} does not exist: generate the demo corpus with `tunegraph demo`")
    return [line for line in path.read_text("utf-8").splitlines() if line.strip()]


def training_usage(settings: Settings) -> dict[str, dict[str, Training]]:
    """What training each approach's models took, from their manifests: the fine-tuned
    assessment's vision-language model; the agentic one's damage model and report-writing
    adapter; the text adapter behind the fine-tuned chat modes and the agent."""
    from agents.compare.run import Training

    def manifest(directory: Path | None) -> dict[str, Any]:
        if directory is None or not (directory / MANIFEST).is_file():
            return {}
        return json.loads((directory / MANIFEST).read_text("utf-8")).get("metrics", {})

    vlm_dir = composition.vision_lm_dir(settings)
    damage_dir = composition.damage_model_dir(settings)
    adapter_dir = composition.text_adapter_dir(settings)
    vlm, damage, adapter = manifest(vlm_dir), manifest(damage_dir), manifest(adapter_dir)
    vlm_tokens = vlm.get("train_tokens", 0) + vlm.get("align", {}).get("train_tokens", 0)
    text = Training(adapter.get("train_tokens", 0), 0, (adapter_dir.name,) if adapter else ())
    return {
        "assessment": {
            "finetuned": Training(vlm_tokens, 0, (vlm_dir.name,) if vlm else ()),
            "agentic": Training(
                text.tokens,
                damage.get("train_images", 0),
                tuple(d.name for d in (damage_dir, adapter_dir) if d is not None),
            ),
        },
        "chat": {mode: text for mode in ("finetuned", "finetuned-rag", "agent")},
    }


def vision_token_counter(vision: Any) -> Callable[[Any, str], tuple[int, int]] | None:
    """Tokens of a tunegraph vision-language model's call, counted after it: the prompt, visual
    tokens and tags it read (``last_prompt_tokens``) in, the JSON answer and end of turn out.
    None for other vision models."""
    model = getattr(vision, "model", None)
    if model is None or not hasattr(model, "vlm") or not hasattr(model, "last_prompt_tokens"):
        return None

    def count(images: Any, answer: str) -> tuple[int, int]:
        return model.last_prompt_tokens, len(model.vlm.answer_ids(answer))

    return count
