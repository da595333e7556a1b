"""The whole comparison as one function a command or a job calls: held-out items from the demo
corpus, the graphs' context from the caller's factory, :func:`agents.compare.run.run_comparison`,
then the report in ``runs_dir / NAME``."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.compare.records import (
    HARDWARE,
    Bar,
    CompareError,
    Comparison,
    Progress,
    Size,
    TrainedModels,
    size_problem,
)

if TYPE_CHECKING:
    from agents.context import AgentContext


@dataclass(frozen=True)
class CompareOptions:
    """What to compare on. ``images`` / ``questions`` / ``claims``: seeded samples of the
    demo's test photos, test questions (stratified by kind) and test claims (their fraud
    labels; see :mod:`agents.compare.claims`), ``"all"`` for the whole test split, 0 to skip;
    ``concurrency``: calls in flight at once (the text engine batches them; latency then
    includes the wait for a turn); ``prices``: a YAML price table (see
    :class:`agents.compare.records.Prices`), with ``cpu_per_hour`` / ``gpu_per_hour`` on top
    when given; ``hardware``: what the self-hosted models run on, ``cpu`` or ``gpu`` (None: a
    GPU when PyTorch sees one); ``resamples``: bootstrap resamples per metric;
    ``max_tokens``: a cap on every text-model answer (chat and assessment reports; None: the
    model's own default)."""

    name: str = "compare"
    images: Size = 24
    questions: Size = 40
    claims: Size = 40
    concurrency: int = 1
    prices: Path | None = None
    seed: int = 0
    resamples: int = 1000
    max_tokens: int | None = None
    cpu_per_hour: float | None = None
    gpu_per_hour: float | None = None
    hardware: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name) or self.name.startswith("."):
            problems.append("name: use 1-64 letters, digits, '.', '_' or '-'")
        for key in ("images", "questions", "claims"):
            problem = size_problem(key, getattr(self, key))
            if problem:
                problems.append(problem)
        concurrency = self.concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            problems.append(f"concurrency: use a whole number >= 1, not {concurrency!r}")
        if self.resamples < 100:
            problems.append("resamples: use at least 100")
        if self.max_tokens is not None and self.max_tokens < 1:
            problems.append("max_tokens: use at least 1")
        for key in ("cpu_per_hour", "gpu_per_hour"):
            if (getattr(self, key) or 0) < 0:
                problems.append(f"{key} cannot be negative")
        if self.hardware not in (None, *HARDWARE):
            problems.append(f"hardware: use {' or '.join(HARDWARE)}, not {self.hardware!r}")
        if problems:
            raise CompareError("; ".join(problems))


@dataclass
class CompareResult:
    """The report's folder, its files by name, and the comparison it shows."""

    out: Path
    files: dict[str, Path]
    comparison: Comparison

    def summary(self) -> dict[str, Any]:
        """Scores, costs and verdicts without the per-item rows, and the report's folder
        (what `tunegraph compare --json` prints and a compare job returns)."""
        data = self.comparison.to_dict()
        data.pop("items")
        return {"out": str(self.out), **data}


def run_compare(
    options: CompareOptions,
    *,
    demo_dir: Path,
    runs_dir: Path,
    models: TrainedModels,
    context_factory: Callable[[], AgentContext],
    progress: Progress | None = None,
    bar: Bar | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CompareResult:
    """Compare the approaches on the held-out items of the demo corpus in ``demo_dir`` and
    write the report to ``runs_dir / options.name`` (report.md, report.html, report.json, PNG
    plots). While it runs, the graphs read a copy of the claims database without the test
    claims (:func:`agents.compare.claims.without_claims`).

    ``models``: the trained artifacts, whose manifests say what training cost;
    ``context_factory`` loads the graphs' models (slow); ``progress(fraction, message)`` is
    told when the models load (0.0) and after each call; ``bar``: a tqdm-like bar per approach.
    Raises :class:`CompareError` for bad input and
    :class:`agents.compare.records.ComparisonCancelled` when ``should_stop()`` turns true.
    """
    from agents.compare.claims import held_out_claim_ids, held_out_claims, without_claims
    from agents.compare.inputs import (
        held_out_questions,
        load_prices,
        manual_numbers,
        photo_cases,
        training_usage,
    )
    from agents.compare.report import write_report
    from agents.compare.run import (
        ASSESSMENT_GRAPHS,
        CHAT_MODES,
        run_comparison,
        vision_token_counter,
    )

    hourly = {k: getattr(options, k) for k in ("cpu_per_hour", "gpu_per_hour")}
    prices = load_prices(options.prices, {k: v for k, v in hourly.items() if v is not None})
    photos = photo_cases(demo_dir, options.images, options.seed) if options.images else []
    claims = held_out_claims(demo_dir, options.claims, options.seed)
    # the test split and the manual the served adapter kept, when it kept them
    kept = models.text_adapter / "data" if models.text_adapter else None
    test = kept / "test.jsonl" if kept and (kept / "test.jsonl").is_file() else None
    questions = held_out_questions(demo_dir, options.questions, options.seed, test)
    blocks = kept / "blocks.jsonl" if kept and (kept / "blocks.jsonl").is_file() else None
    known = manual_numbers(demo_dir, blocks if test else None)
    if progress:
        progress(0.0, "loading the models")
    context = context_factory()
    if options.max_tokens and context.llm is not None:
        capped = context.llm.model_copy(update={"max_tokens": options.max_tokens})
        context = replace(context, llm=capped)
    with tempfile.TemporaryDirectory(prefix="tunegraph-compare-") as scratch:
        if context.claims_db is not None and (demo_dir / "claims" / "claims.csv").is_file():
            hidden = held_out_claim_ids(demo_dir)
            history = without_claims(context.claims_db, hidden, Path(scratch))
            context = replace(context, claims_db=history)
        comparison = run_comparison(
            context,
            photos,
            questions,
            known_numbers=known,
            claims=claims,
            prices=prices,
            training=training_usage(models),
            approaches=tuple(ASSESSMENT_GRAPHS),
            modes=CHAT_MODES if questions else (),
            vision_tokens=vision_token_counter(context.vision),
            hardware=options.hardware or _hardware(),
            concurrency=options.concurrency,
            progress=progress,
            bar=bar,
            should_stop=should_stop,
            resamples=options.resamples,
            seed=options.seed,
        )
    out = runs_dir / options.name
    files = write_report(comparison, out, f"tunegraph compare: {options.name}")
    return CompareResult(out, files, comparison)


def _hardware() -> str:
    """``gpu`` when PyTorch sees one (where the model store's ``auto`` device puts the models),
    else ``cpu``."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"
