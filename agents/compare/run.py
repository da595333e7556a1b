"""Running the comparison: the fine-tuned and agentic assessments on the same held-out photos,
the five service-chat modes on the same held-out questions, each call timed and its tokens
counted, and each model call inside it too (what compute billing charges for);
:func:`agents.compare.summary.summarize` then scores, prices and judges them.

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
from uuid import UUID

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
    hardware: str = "cpu",
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
    assessment's tokens are reported as unknown); ``hardware`` (``cpu`` or ``gpu``): what the
    self-hosted models run on, billed at its hourly price. A text model on an OpenAI-compatible
    server is billed by its tokens instead.
    """
    prices = prices or Prices()
    prices.per_hour(hardware)  # an unknown hardware fails before any call
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

    hosted = llm_hosted(context.llm)
    assessments = {}
    for approach in approaches:
        assessments[approach] = []
        for photo in _bar(bar, photos, f"assess ({approach})"):
            check()
            assessments[approach].append(_assess(context, approach, photo, vision_tokens, hosted))
            step(f"{approach}: photo {photo.id}")
    chats = {}
    for mode in modes:
        chats[mode] = []
        for question in _bar(bar, questions, f"chat ({mode})"):
            check()
            chats[mode].append(_chat(context, mode, question, hosted))
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
        hardware=hardware,
        llm_hosted=hosted,
        resamples=resamples,
        seed=seed,
    )


def llm_hosted(llm: Any) -> bool:
    """Whether a server (the OpenAI-compatible backend), not this process, runs the text model:
    its calls are then billed by tokens, not by compute."""
    from agents.backends.openai_compat import OpenAICompatibleBackend

    return isinstance(getattr(llm, "backend", None), OpenAICompatibleBackend)


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
    """Adds up the usage every chat-model call of a graph run reports, and the calls' wall
    time (from each call's start to its end or error)."""

    def __init__(self) -> None:
        self.input_tokens = self.output_tokens = 0
        self.seconds = 0.0
        self._started: dict[UUID, float] = {}
        self._lock = threading.Lock()  # the agentic graph's branches run in threads

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **_: Any
    ) -> None:
        with self._lock:
            self._started[run_id] = time.perf_counter()

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID, **_: Any) -> None:
        with self._lock:
            self._started[run_id] = time.perf_counter()

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id)
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    with self._lock:
                        self.input_tokens += usage.get("input_tokens", 0)
                        self.output_tokens += usage.get("output_tokens", 0)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id)

    def _stop(self, run_id: UUID) -> None:
        with self._lock:
            started = self._started.pop(run_id, None)
            if started is not None:
                self.seconds += time.perf_counter() - started


@dataclass
class _MeteredVision:
    """The context's vision model, timing its calls and counting tokens with ``count``."""

    inner: Any
    count: VisionTokens | None
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def assess(self, images, claim, feedback=None) -> str | dict[str, Any]:
        started = time.perf_counter()
        try:
            answer = self.inner.assess(images, claim, feedback)
        finally:
            self.seconds += time.perf_counter() - started
        if self.count is not None:
            # the answer's tokens as the model writes them (compact JSON)
            text = answer if isinstance(answer, str) else json.dumps(answer, separators=(",", ":"))
            tokens_in, tokens_out = self.count(images, text)
            self.input_tokens += tokens_in
            self.output_tokens += tokens_out
        return answer


@dataclass
class _MeteredDamage:
    """The context's damage model, timing its calls."""

    inner: Any
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def detect(self, images) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.detect(images)
        finally:
            self.seconds += time.perf_counter() - started


def _assess(
    context: AgentContext,
    approach: str,
    photo: PhotoCase,
    vision_tokens: VisionTokens | None,
    hosted: bool,
) -> Outcome:
    meter = _TokenMeter()
    vision = _MeteredVision(context.vision, vision_tokens) if context.vision else None
    damage = _MeteredDamage(context.damage_model) if context.damage_model else None
    run_context = dataclasses.replace(context, vision=vision, damage_model=damage)
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
    seconds = sum(m.seconds for m in (vision, damage) if m is not None)
    return Outcome(
        output, latency, tokens_in, tokens_out, error=error, **_billed(meter, seconds, hosted)
    )


def _billed(meter: _TokenMeter, seconds: float, hosted: bool) -> dict[str, Any]:
    """What a call is billed for: its self-hosted models' seconds (``seconds`` of the vision
    and damage models, and the text model's unless a server hosts it), the hosted tokens."""
    if hosted:
        return {
            "compute_s": seconds,
            "hosted_input_tokens": meter.input_tokens,
            "hosted_output_tokens": meter.output_tokens,
        }
    return {"compute_s": seconds + meter.seconds}


def _chat(context: AgentContext, mode: str, question: QAPair, hosted: bool) -> Outcome:
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
    return Outcome(
        output,
        latency,
        meter.input_tokens,
        meter.output_tokens,
        stopped,
        error,
        **_billed(meter, 0.0, hosted),
    )


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
