"""Running the comparison: the fine-tuned and agentic assessments on the same held-out photos,
the five service-chat modes on the same held-out questions, each call timed and its tokens
counted; :func:`agents.compare.summary.summarize` then scores, prices and judges them.

Pure: the caller gives the :class:`AgentContext`, the items and the price table; nothing here
reads settings or writes files. An approach that fails on an item records the error and the run
goes on; ``should_stop`` is checked between calls (a job's cancel), ``progress(fraction,
message)`` is told after each call.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage

from agents.compare.records import (
    Bar,
    Comparison,
    ComparisonCancelled,
    Outcome,
    PhotoCase,
    Prices,
    Progress,
    Training,
    VisionTokens,
)
from agents.compare.summary import summarize
from agents.context import AgentContext
from agents.graphs import assess_agentic, assess_finetuned, service_chat
from ingest.records import QAPair

ASSESSMENT_GRAPHS = {"finetuned": assess_finetuned.graph, "agentic": assess_agentic.graph}
CHAT_MODES = service_chat.MODES


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


def vision_token_counter(vision: Any) -> VisionTokens | None:
    """Tokens of a tunegraph vision-language model's call, counted after it: the prompt, visual
    tokens and tags it read (``last_prompt_tokens``) in, the JSON answer and end of turn out.
    None for other vision models."""
    model = getattr(vision, "model", None)
    if model is None or not hasattr(model, "vlm") or not hasattr(model, "last_prompt_tokens"):
        return None

    def count(images: Any, answer: str) -> tuple[int, int]:
        return model.last_prompt_tokens, len(model.vlm.answer_ids(answer))

    return count


def _bar(bar: Bar | None, items: Sequence, desc: str) -> Iterable:
    return bar(items, desc=desc, unit="call") if bar else items


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

    def assess(self, images, claim, feedback=None) -> str | dict[str, Any]:
        answer = self.inner.assess(images, claim, feedback)
        if self.count is not None:
            # the answer's tokens as the model writes them (compact JSON)
            text = answer if isinstance(answer, str) else json.dumps(answer, separators=(",", ":"))
            tokens_in, tokens_out = self.count(images, text)
            self.input_tokens += tokens_in
            self.output_tokens += tokens_out
        return answer


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
        output, error = state["assessment"].model_dump(mode="json"), None
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
