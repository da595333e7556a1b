"""The comparison behind ``tunegraph compare``: the fine-tuned and agentic assessments on the
same held-out photos, the five service-chat modes on the same held-out questions, each call
timed and its tokens counted; then quality, latency, cost and a verdict per metric.

Pure: the caller gives the :class:`AgentContext`, the items and the price table; nothing here
reads settings or writes files. An approach that fails on an item records the error and the run
goes on; ``should_stop`` is checked between calls (a job's cancel), ``progress(fraction,
message)`` is told after each call.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage

from agents.context import AgentContext
from agents.graphs import assess_agentic, assess_finetuned, service_chat
from finetune.bootstrap import Verdict, mean, verdict
from finetune.evaluation import Generated, score
from finetune.metrics import hallucinated_numbers, latency_stats, numbers, rouge_l, spec_exact_match
from finetune.vision_metrics import classification_scores, damage_scores, per_class_delta
from ingest.records import QAPair
from ingest.taxonomy import OVERALL_SEVERITIES

ASSESSMENT_GRAPHS = {"finetuned": assess_finetuned.graph, "agentic": assess_agentic.graph}
CHAT_MODES = service_chat.MODES
# which price row an assessment approach's tokens are billed at (chat modes: text)
TOKEN_KIND = {"finetuned": "vision", "agentic": "text"}

Progress = Callable[[float, str], None]
Bar = Callable[..., Iterable]  # tqdm-like: bar(iterable, desc=..., unit=...)
# (images, one answer of the vision model) -> (input tokens, output tokens)
VisionTokens = Callable[[Sequence[bytes], str], tuple[int, int]]


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


def run_comparison(
    context: AgentContext,
    photos: Sequence[PhotoCase],
    questions: Sequence[QAPair],
    *,
    known_numbers: set[str],
    prices: Prices | None = None,
    training: Mapping[str, Mapping[str, Training]] | None = None,
    approaches: Sequence[str] = tuple(ASSESSMENT_GRAPHS),
    modes: Sequence[str] = CHAT_MODES,
    vision_tokens: VisionTokens | None = None,
    progress: Progress | None = None,
    bar: Bar | None = None,
    should_stop: Callable[[], bool] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Run every approach on ``photos`` and every chat mode on ``questions`` (one call at a
    time, as a client would see them), then score them.

    ``known_numbers``: the numbers written in the manual (a chat answer's other numbers count
    as hallucinated); ``training``: what training each approach's models took
    (``{"assessment": {approach: Training}, "chat": {mode: Training}}``);
    ``vision_tokens`` counts the vision-language model's tokens (without it the fine-tuned
    assessment's tokens and inference cost are reported as unknown).
    """
    prices = prices or Prices()
    unknown = [a for a in approaches if a not in ASSESSMENT_GRAPHS]
    unknown += [m for m in modes if m not in CHAT_MODES]
    if unknown:
        valid = ", ".join([*ASSESSMENT_GRAPHS, *CHAT_MODES])
        raise ValueError(f"unknown approach or mode {', '.join(unknown)}; use {valid}")
    total = len(approaches) * len(photos) + len(modes) * len(questions)
    done = 0

    def step(message: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done / total if total else 1.0, message)

    def check() -> None:
        if should_stop and should_stop():
            raise ComparisonCancelled(f"stopped after {done} of {total} calls")

    assessments = {}
    for approach in approaches:
        assessments[approach] = []
        for photo in _bar(bar, photos, f"assess ({approach})"):
            check()
            assessments[approach].append(_assess(context, approach, photo, vision_tokens))
            step(f"{approach}: photo {photo.id}")
    chats = {}
    for mode in modes:
        chats[mode] = []
        for question in _bar(bar, questions, f"chat ({mode})"):
            check()
            chats[mode].append(_chat(context, mode, question))
            step(f"{mode}: question {question.id}")
    return summarize(
        photos,
        questions,
        assessments,
        chats,
        known_numbers=known_numbers,
        prices=prices,
        training=training,
        tokens_counted=vision_tokens is not None,
        resamples=resamples,
        seed=seed,
    )


def summarize(
    photos: Sequence[PhotoCase],
    questions: Sequence[QAPair],
    assessments: dict[str, list[Outcome]],
    chats: dict[str, list[Outcome]],
    *,
    known_numbers: set[str],
    prices: Prices,
    training: Mapping[str, Mapping[str, Training]] | None = None,
    tokens_counted: bool = True,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Scores, costs and verdicts of recorded outcomes (``tokens_counted``: whether the
    fine-tuned assessment's vision-model tokens were counted)."""
    assessment_scores = {a: score_assessments(photos, rows) for a, rows in assessments.items()}
    deltas = {}
    if "finetuned" in assessment_scores and "agentic" in assessment_scores:
        fine, agentic = assessment_scores["finetuned"], assessment_scores["agentic"]
        deltas = {
            label: per_class_delta(*_aligned(agentic[key], fine[key]))
            for label, key in (
                ("damage-type F1", "type_f1"),
                ("overall-severity accuracy", "overall_per_class"),
            )
        }
    chat_scores = {m: score_chat(questions, rows, known_numbers) for m, rows in chats.items()}
    training = training or {}
    # without a counter, the vision model's tokens are unknown, not free
    uncounted = set() if tokens_counted else {"finetuned"}
    for name in uncounted & set(assessment_scores):
        assessment_scores[name].update(input_tokens_per_call=None, output_tokens_per_call=None)
    costs = {
        task: {
            name: cost(
                rows,
                kind(name),
                prices,
                training.get(task, {}).get(name, Training()),
                counted=task == "chat" or name not in uncounted,
            )
            for name, rows in outcomes.items()
        }
        for task, outcomes, kind in (
            ("assessment", assessments, TOKEN_KIND.__getitem__),
            ("chat", chats, lambda _: "text"),
        )
    }
    return Comparison(
        photos=list(photos),
        questions=list(questions),
        assessments=assessments,
        chats=chats,
        assessment_scores=assessment_scores,
        per_class_delta=deltas,
        chat_scores=chat_scores,
        costs=costs,
        verdicts={
            "assessment": assessment_verdicts(
                photos, assessments, prices, resamples, seed, uncounted
            ),
            "chat": chat_verdicts(questions, chats, known_numbers, prices, resamples, seed),
        },
        prices=prices,
    )


def _aligned(a: dict[str, float], b: dict[str, float]) -> tuple[dict, dict]:
    """Both score maps over the classes either has (a class one of them never saw scores 0)."""
    classes = sorted({*a, *b})
    return {c: a.get(c, 0.0) for c in classes}, {c: b.get(c, 0.0) for c in classes}


def _bar(bar: Bar | None, items: Sequence, desc: str) -> Iterable:
    return bar(items, desc=desc, unit="call") if bar else items


# ---- running --------------------------------------------------------------------------------


class _TokenMeter(BaseCallbackHandler):
    """Adds up the usage every chat-model call of a graph run reports."""

    def __init__(self) -> None:
        self.input_tokens = self.output_tokens = 0
        self._lock = threading.Lock()  # the agentic graph's branches run in threads

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    with self._lock:
                        self.input_tokens += usage.get("input_tokens", 0)
                        self.output_tokens += usage.get("output_tokens", 0)


@dataclass
class _MeteredVision:
    """The context's vision model, counting tokens with ``count``."""

    inner: Any
    count: VisionTokens | None
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def assess(self, images, claim, feedback=None) -> str:
        text = self.inner.assess(images, claim, feedback)
        if self.count is not None:
            tokens_in, tokens_out = self.count(images, text)
            self.input_tokens += tokens_in
            self.output_tokens += tokens_out
        return text


def _assess(
    context: AgentContext, approach: str, photo: PhotoCase, vision_tokens: VisionTokens | None
) -> Outcome:
    meter = _TokenMeter()
    vision = _MeteredVision(context.vision, vision_tokens) if context.vision else None
    run_context = dataclasses.replace(context, vision=vision)
    started = time.perf_counter()
    try:
        state = ASSESSMENT_GRAPHS[approach].invoke(
            {"images": [photo.image]}, context=run_context, config={"callbacks": [meter]}
        )
        output, error = state["assessment"], None
    except Exception as exc:  # any failure is this approach's result on this photo
        output, error = None, _describe(exc)
    latency = (time.perf_counter() - started) * 1000
    tokens_in = meter.input_tokens + (vision.input_tokens if vision else 0)
    tokens_out = meter.output_tokens + (vision.output_tokens if vision else 0)
    return Outcome(output, latency, tokens_in, tokens_out, error=error)


def _chat(context: AgentContext, mode: str, question: QAPair) -> Outcome:
    meter = _TokenMeter()
    started = time.perf_counter()
    try:
        state = service_chat.graph.invoke(
            {"messages": [HumanMessage(f"[{question.kind}] {question.question}")], "mode": mode},
            context=context,
            config={"callbacks": [meter]},
        )
        reply = state["messages"][-1]
        output, error = reply.text, None
        stopped = reply.response_metadata.get("finish_reason", "stop") == "stop"
    except Exception as exc:
        output, error, stopped = None, _describe(exc), False
    latency = (time.perf_counter() - started) * 1000
    return Outcome(output, latency, meter.input_tokens, meter.output_tokens, stopped, error)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


# ---- scoring --------------------------------------------------------------------------------


def _damages(outcome: Outcome) -> list[dict[str, Any]] | None:
    return None if outcome.output is None else outcome.output["damages"]


def _overall(outcome: Outcome) -> str | None:
    return None if outcome.output is None else outcome.output["overall_severity"]


def _cost_mid(outcome: Outcome) -> float | None:
    if outcome.output is None:
        return None
    estimate = outcome.output["cost_estimate"]
    return (estimate["min"] + estimate["max"]) / 2


def _damage_scores(photos: Sequence[PhotoCase], rows: Sequence[Outcome]) -> dict[str, Any]:
    return damage_scores(
        [_damages(o) for o in rows],
        [list(p.damages) for p in photos],
        predicted_overall=[_overall(o) for o in rows],
        true_overall=[p.overall for p in photos],
        predicted_cost=[_cost_mid(o) for o in rows],
        true_cost=[p.cost for p in photos],
    )


def score_assessments(photos: Sequence[PhotoCase], rows: Sequence[Outcome]) -> dict[str, Any]:
    """Damage-type/part F1, severity and overall-severity accuracy, cost MAE (middle of the
    estimated range against the annotated cost), the overall-severity confusion matrix, the
    failure rate, latency of the successful calls and tokens per call. A failed call counts
    as an invalid (empty) prediction."""
    scores = _damage_scores(photos, rows)
    scored = [(p.overall, _overall(o)) for p, o in zip(photos, rows, strict=True) if p.overall]
    confusion = classification_scores(
        [pred or "none" for _, pred in scored], [true for true, _ in scored], OVERALL_SEVERITIES
    )
    return {
        **scores,
        "failed": sum(o.error is not None for o in rows),
        "failure_rate": round(sum(o.error is not None for o in rows) / len(rows), 4) if rows else 0,
        "errors": _error_counts(rows),
        "overall_confusion": confusion["confusion"],
        "overall_per_class": confusion["per_class"],
        **_usage(rows),
    }


def score_chat(
    questions: Sequence[QAPair], rows: Sequence[Outcome], known: set[str]
) -> dict[str, Any]:
    """``finetune.evaluation.score`` (SPEC exact match, ROUGE-L per kind, hallucinated-number
    rate) of the answers (a failed call answers "": it scores 0, and the hallucination rate is
    None when no call succeeded), plus failures, latency of the successful calls and tokens
    per call."""
    answers = [Generated(o.output or "", o.stopped, o.latency_ms) for o in rows]
    scores = score(questions, answers, known)
    if all(o.error is not None for o in rows):
        scores["hallucinated_number_rate"] = None
    rouge = [_item_score(q, o) for q, o in zip(questions, rows, strict=True) if q.kind != "SPEC"]
    return {
        **scores,
        "rouge_l": round(sum(rouge) / len(rouge), 4) if rouge else None,
        "failed": sum(o.error is not None for o in rows),
        "failure_rate": round(sum(o.error is not None for o in rows) / len(rows), 4) if rows else 0,
        "errors": _error_counts(rows),
        **_usage(rows),
    }


def _usage(rows: Sequence[Outcome]) -> dict[str, Any]:
    """Latency and tokens of the successful calls."""
    ok = [o for o in rows if o.error is None]
    n = len(ok) or 1
    return {
        "latency_ms": latency_stats([o.latency_ms for o in ok]),
        "input_tokens_per_call": round(sum(o.input_tokens for o in ok) / n, 1),
        "output_tokens_per_call": round(sum(o.output_tokens for o in ok) / n, 1),
    }


def _error_counts(rows: Sequence[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in rows:
        if o.error is not None:
            counts[o.error] = counts.get(o.error, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:5])


def _item_score(question: QAPair, outcome: Outcome) -> float:
    answer = outcome.output or ""
    if question.kind == "SPEC":
        return float(spec_exact_match(answer, question.answer))
    return rouge_l(answer, question.answer)


# ---- cost -----------------------------------------------------------------------------------


def cost(
    rows: Sequence[Outcome],
    kind: str,
    prices: Prices,
    training: Training,
    counted: bool = True,
) -> dict[str, Any]:
    """Inference cost per 1,000 requests from the mean tokens of the successful calls (None
    when none succeeded, or the tokens were not ``counted``); hosting per 1,000 requests served
    one at a time at their mean latency; training cost from training tokens (and images) x
    price.

    >>> c = cost([Outcome("x", 1800.0, 1000, 100)], "text", Prices(), Training(tokens=2_000_000))
    >>> c["inference_per_1k"], c["hosting_per_1k"], c["training"]
    (3.5, 0.85, 55.0)
    """
    ok = [o for o in rows if o.error is None]
    price_in = getattr(prices, f"{kind}_input_per_1m")
    price_out = getattr(prices, f"{kind}_output_per_1m")
    tokens_in = tokens_out = inference = mean_s = None
    if ok:
        mean_s = sum(o.latency_ms for o in ok) / len(ok) / 1000
    if ok and counted:
        tokens_in = round(sum(o.input_tokens for o in ok) / len(ok), 1)
        tokens_out = round(sum(o.output_tokens for o in ok) / len(ok), 1)
        inference = round(1000 * (tokens_in * price_in + tokens_out * price_out) / 1e6, 4)
    return {
        "input_tokens_per_call": tokens_in,
        "output_tokens_per_call": tokens_out,
        "inference_per_1k": inference,
        "hosting_per_hour": prices.hosting_per_hour,
        "hosting_per_1k": (
            round(1000 * mean_s / 3600 * prices.hosting_per_hour, 4) if mean_s is not None else None
        ),
        "training_tokens": training.tokens,
        "training_images": training.images,
        "training_models": list(training.models),
        "training": round(
            training.tokens / 1e6 * prices.training_per_1m_tokens
            + training.images / 1e3 * prices.training_per_1k_images,
            2,
        ),
        "currency": prices.currency,
    }


# ---- verdicts -------------------------------------------------------------------------------


def _shared(
    outcomes: Mapping[str, Sequence[Outcome]],
    kind: Callable[[str], str],
    prices: Prices,
    uncounted: set[str] = frozenset(),
) -> dict[str, tuple[Callable, bool]]:
    """Metrics every task has: failures, latency and inference cost per 1,000 requests (both
    over the successful calls)."""

    def latency(name, idx):
        return mean({i: o.latency_ms for i, o in enumerate(outcomes[name]) if o.error is None}, idx)

    def failures(name, idx):
        return mean([float(o.error is not None) for o in outcomes[name]], idx)

    def inference(name, idx):
        if name in uncounted:
            return None
        k = kind(name)
        per_call = {
            i: o.input_tokens * getattr(prices, f"{k}_input_per_1m")
            + o.output_tokens * getattr(prices, f"{k}_output_per_1m")
            for i, o in enumerate(outcomes[name])
            if o.error is None
        }
        value = mean(per_call, idx)
        return None if value is None else 1000 * value / 1e6

    return {
        "failure rate": (failures, False),
        "mean latency (ms)": (latency, False),
        f"inference cost per 1k requests ({prices.currency})": (inference, False),
    }


def assessment_verdicts(
    photos: Sequence[PhotoCase],
    outcomes: Mapping[str, Sequence[Outcome]],
    prices: Prices,
    resamples: int = 1000,
    seed: int = 0,
    uncounted: set[str] = frozenset(),
) -> list[Verdict]:
    """Per metric, the best approach and its margin with a paired-bootstrap 95 % CI
    (``uncounted``: approaches whose tokens were not counted)."""
    cache: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}

    def scores(name: str, idx: Sequence[int]) -> dict[str, Any]:
        key = (name, tuple(idx))
        if key not in cache:  # every metric's bootstrap draws the same resamples
            cache[key] = _damage_scores([photos[i] for i in idx], [outcomes[name][i] for i in idx])
        return cache[key]

    def field_of(key: str) -> Callable:
        return lambda name, idx: scores(name, idx).get(key)

    metrics = {
        "damage-type F1 (micro)": (field_of("type_f1_micro"), True),
        "damage-type F1 (macro)": (field_of("type_f1_macro"), True),
        "part F1 (micro)": (field_of("part_f1_micro"), True),
        "severity accuracy": (field_of("severity_accuracy"), True),
        "overall-severity accuracy": (field_of("overall_severity_accuracy"), True),
        "cost MAE": (field_of("cost_mae"), False),
        **_shared(outcomes, TOKEN_KIND.__getitem__, prices, uncounted),
    }
    return _verdicts(metrics, list(outcomes), len(photos), resamples, seed)


def chat_verdicts(
    questions: Sequence[QAPair],
    outcomes: Mapping[str, Sequence[Outcome]],
    known: set[str],
    prices: Prices,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Verdict]:
    """Per metric, the best chat mode and its margin over the runner-up, with a 95 % CI."""
    item_scores = {
        name: [_item_score(q, o) for q, o in zip(questions, rows, strict=True)]
        for name, rows in outcomes.items()
    }
    spec = {i for i, q in enumerate(questions) if q.kind == "SPEC"}
    counts = {  # (hallucinated, all) numbers of each successful answer
        name: {
            i: (len(hallucinated_numbers(o.output, known)), len(numbers(o.output)))
            for i, o in enumerate(rows)
            if o.error is None
        }
        for name, rows in outcomes.items()
    }

    def by_kind(spec_items: bool) -> Callable:
        def value(name, idx):
            picked = [i for i in idx if (i in spec) == spec_items]
            return mean(item_scores[name], picked) if picked else None

        return value

    def hallucination(name, idx):
        answered = [counts[name][i] for i in idx if i in counts[name]]
        if not answered:  # no answer cannot be praised for inventing no numbers
            return None
        total = sum(all_numbers for _, all_numbers in answered)
        return sum(bad for bad, _ in answered) / total if total else 0.0

    metrics = {
        "SPEC exact match": (by_kind(True), True),
        "ROUGE-L (procedures, explanations...)": (by_kind(False), True),
        "hallucinated-number rate": (hallucination, False),
        **_shared(outcomes, lambda _: "text", prices),
    }
    return _verdicts(metrics, list(outcomes), len(questions), resamples, seed)


def _verdicts(
    metrics: Mapping[str, tuple[Callable, bool]],
    names: list[str],
    n: int,
    resamples: int,
    seed: int,
) -> list[Verdict]:
    return [
        verdict(metric, names, n, scorer, higher_is_better=higher, resamples=resamples, seed=seed)
        for metric, (scorer, higher) in metrics.items()
    ]
