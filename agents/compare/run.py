"""Running the comparison: the fine-tuned and agentic assessments on the same held-out photos
and test claims, the five service-chat modes on the same held-out questions, each call timed
and its tokens counted, and each model call inside it too (what compute billing charges for);
:func:`agents.compare.summary.summarize` then scores, prices and judges them.

``concurrency`` calls of one approach (or chat mode) are in flight at once, as a server's
clients would send them: the text engine decodes concurrent requests in one batch, so this is
how it is used at its throughput. A call's latency is then what its client waits, its turn in
the batch included; ``concurrency=1`` measures one client alone. The vision and damage models
take one call at a time (as the server runs them); a call's compute is its share of the
machine: each instant of model time is split among the model calls running then
(:class:`ComputeClock`). Answers do not depend on it: greedy decoding, one item per call.

Pure: the caller gives the :class:`AgentContext`, the items and the price table; nothing here
reads settings or writes files. An approach that fails on an item records the error and the run
goes on; ``should_stop`` is checked before each call (a job's cancel), ``progress(fraction,
message)`` is told after each call, in item order.

Over 400 lines on purpose: the calls and the meters that time and count them are one mechanism; a
call's :class:`Outcome` is what its meters saw, and the billing split in ``_outcome`` is read
beside the :class:`ComputeClock` and the metered models that feed it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage

from agents.compare.records import (
    Bar,
    ClaimCase,
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
# the node after which an approach's fraud risk is final (a fraud run stops there: the agentic
# report that follows does not change it); an approach not named runs its whole graph
FRAUD_NODES = {"agentic": "fraud"}
# an approach whose graph gives every claim the same fraud risk by design: its fraud outcome is
# that risk, without running the model on the claim's photos to get it
FIXED_FRAUD = {"finetuned": assess_finetuned.FRAUD_NOT_ASSESSED}


def run_comparison(
    context: AgentContext,
    photos: Sequence[PhotoCase],
    questions: Sequence[QAPair],
    *,
    known_numbers: set[str],
    claims: Sequence[ClaimCase] = (),
    prices: Prices | None = None,
    training: Mapping[str, Mapping[str, Training]] | None = None,
    approaches: Sequence[str] = tuple(ASSESSMENT_GRAPHS),
    modes: Sequence[str] = CHAT_MODES,
    vision_tokens: VisionTokens | None = None,
    hardware: str = "cpu",
    concurrency: int = 1,
    progress: Progress | None = None,
    bar: Bar | None = None,
    should_stop: Callable[[], bool] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Run every approach on ``photos`` and on ``claims`` (their fraud risk), and every chat
    mode on ``questions``, ``concurrency`` calls at a time, then score them.

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
    if concurrency < 1:
        raise ValueError(f"concurrency: use 1 or more, not {concurrency}")
    total = len(approaches) * (len(photos) + len(claims)) + len(modes) * len(questions)
    done = 0

    def check() -> None:
        if should_stop and should_stop():
            raise ComparisonCancelled(f"stopped after {done} of {total} calls")

    meters = _Meters(vision_tokens, llm_hosted(context.llm))
    wall: dict[str, dict[str, float]] = {"assessment": {}, "chat": {}, "fraud": {}}

    def run_all(task: str, name: str, items: Sequence, call: Callable, label: str) -> list:
        """``call`` on every item, ``concurrency`` at a time, the outcomes in item order."""
        nonlocal done

        def guarded(item: Any) -> Outcome:
            check()
            return call(item)

        rows = []
        started = time.perf_counter()
        pool = ThreadPoolExecutor(concurrency, "compare") if concurrency > 1 else None
        with pool or contextlib.nullcontext():
            outcomes: Iterator = pool.map(guarded, items) if pool else map(guarded, items)
            desc = f"{task} ({name})"
            for item, outcome in zip(items, _bar(bar, outcomes, desc, len(items)), strict=True):
                rows.append(outcome)
                done += 1
                if progress:
                    progress(done / total if total else 1.0, f"{name}: {label} {item.id}")
        wall[task][name] = round(time.perf_counter() - started, 3)
        return rows

    assessments = {
        approach: run_all(
            "assessment",
            approach,
            photos,
            lambda photo, a=approach: _assess(context, a, [photo.image], None, meters),
            "photo",
        )
        for approach in (approaches if photos else ())
    }
    chats = {
        mode: run_all(
            "chat", mode, questions, lambda q, m=mode: _chat(context, m, q, meters), "question"
        )
        for mode in (modes if questions else ())
    }
    frauds = {
        approach: run_all(
            "fraud",
            approach,
            claims,
            lambda case, a=approach: _fraud(context, a, case, meters),
            "claim",
        )
        for approach in (approaches if claims else ())
    }
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
        llm_hosted=meters.hosted,
        claims=claims,
        frauds=frauds,
        concurrency=concurrency,
        wall_s={task: times for task, times in wall.items() if times},
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


def _bar(bar: Bar | None, items: Iterable, desc: str, total: int) -> Iterable:
    return bar(items, desc=desc, unit="call", total=total) if bar else items


class ComputeClock:
    """The machine's model time, shared out among the model calls running at once: each
    instant is split equally among the calls in flight then, so that the calls' shares add up
    to the time some model was running (what the hardware is paid for), however many ran
    together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # call -> its share so far
        self._since = time.perf_counter()
        self._next = 0

    def start(self) -> int:
        """A model call begins; the key to :meth:`stop` it with."""
        with self._lock:
            self._advance()
            self._next += 1
            self._running[self._next] = 0.0
            return self._next

    def stop(self, key: int) -> float:
        """A model call ended: its share of the machine's seconds."""
        with self._lock:
            self._advance()
            return self._running.pop(key)

    def _advance(self) -> None:
        now = time.perf_counter()
        if self._running:
            share = (now - self._since) / len(self._running)
            for key in self._running:
                self._running[key] += share
        self._since = now


@dataclass
class _Meters:
    """What every call of a run shares: the vision-token counter, whether a server hosts the
    text model, the compute clock, and one lock per vision model (each takes one call at a
    time, as the server runs it; the vision-language model's token count is read after its
    call)."""

    vision_tokens: VisionTokens | None
    hosted: bool
    clock: ComputeClock = field(default_factory=ComputeClock)
    vision_lock: threading.Lock = field(default_factory=threading.Lock)
    damage_lock: threading.Lock = field(default_factory=threading.Lock)
    hosted_clock: ComputeClock = field(default_factory=ComputeClock)

    @property
    def text_clock(self) -> ComputeClock:
        """The clock the text model's calls run on: this machine's, or, when a server hosts
        the model, one of their own (the server's time is not this machine's to share out)."""
        return self.hosted_clock if self.hosted else self.clock


class _TokenMeter(BaseCallbackHandler):
    """Adds up the usage every chat-model call of a graph run reports, and the calls' share of
    the machine from :class:`ComputeClock` (from each call's start to its end or error)."""

    def __init__(self, clock: ComputeClock) -> None:
        self.input_tokens = self.output_tokens = 0
        self.seconds = 0.0
        self._clock = clock
        self._started: dict[UUID, int] = {}
        self._lock = threading.Lock()  # the agentic graph's branches run in threads

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **_: Any
    ) -> None:
        with self._lock:
            self._started[run_id] = self._clock.start()

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID, **_: Any) -> None:
        with self._lock:
            self._started[run_id] = self._clock.start()

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
            key = self._started.pop(run_id, None)
            if key is not None:
                self.seconds += self._clock.stop(key)


@dataclass
class _MeteredVision:
    """The context's vision model, one call at a time, its calls' share of the machine timed
    and their tokens counted with ``count``."""

    inner: Any
    count: VisionTokens | None
    clock: ComputeClock
    lock: threading.Lock
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def assess(self, images, claim, feedback=None) -> str | dict[str, Any]:
        with self.lock:
            key = self.clock.start()
            try:
                answer = self.inner.assess(images, claim, feedback)
            finally:
                self.seconds += self.clock.stop(key)
            if self.count is not None:
                # the answer's tokens as the model writes them (compact JSON)
                text = (
                    answer if isinstance(answer, str) else json.dumps(answer, separators=(",", ":"))
                )
                tokens_in, tokens_out = self.count(images, text)
                self.input_tokens += tokens_in
                self.output_tokens += tokens_out
        return answer


@dataclass
class _MeteredDamage:
    """The context's damage model, one call at a time, its calls' share of the machine timed."""

    inner: Any
    clock: ComputeClock
    lock: threading.Lock
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def detect(self, images) -> Any:
        with self.lock:
            key = self.clock.start()
            try:
                return self.inner.detect(images)
            finally:
                self.seconds += self.clock.stop(key)


def _metered(context: AgentContext, meters: _Meters) -> tuple[AgentContext, list]:
    """``context`` with its vision models metered for one call, and those meters."""
    vision = damage = None
    if context.vision:
        vision = _MeteredVision(
            context.vision, meters.vision_tokens, meters.clock, meters.vision_lock
        )
    if context.damage_model:
        damage = _MeteredDamage(context.damage_model, meters.clock, meters.damage_lock)
    run_context = dataclasses.replace(context, vision=vision, damage_model=damage)
    return run_context, [m for m in (vision, damage) if m is not None]


def _assess(
    context: AgentContext,
    approach: str,
    images: list[bytes],
    claim: dict[str, Any] | None,
    meters: _Meters,
) -> Outcome:
    meter = _TokenMeter(meters.text_clock)
    run_context, models = _metered(context, meters)
    started = time.perf_counter()
    try:
        state = ASSESSMENT_GRAPHS[approach].invoke(
            {"images": images, **({"claim": claim} if claim else {})},
            context=run_context,
            config={"callbacks": [meter]},
        )
        output, error = state["assessment"].model_dump(mode="json"), None
    except Exception as exc:  # any failure is this approach's result on this photo
        output, error = None, _describe(exc)
    latency = (time.perf_counter() - started) * 1000
    return _outcome(output, latency, error, meter, models, meters.hosted)


def _fraud(context: AgentContext, approach: str, case: ClaimCase, meters: _Meters) -> Outcome:
    """The fraud part of ``approach``'s Assessment of a test claim (its photos and what the
    claim says), the run stopped once the risk is final (:data:`FRAUD_NODES`); an approach
    that does not assess fraud gives its fixed risk (:data:`FIXED_FRAUD`) without a call."""
    if approach in FIXED_FRAUD and context.vision is not None:  # without it: fails as a run
        return Outcome(output=FIXED_FRAUD[approach].model_dump(mode="json"))
    node = FRAUD_NODES.get(approach)
    if node is None:
        outcome = _assess(context, approach, list(case.images), case.claim, meters)
        if outcome.output is not None:
            outcome.output = outcome.output["fraud"]
        return outcome
    meter = _TokenMeter(meters.text_clock)
    run_context, models = _metered(context, meters)
    started = time.perf_counter()
    output = error = None
    try:
        for update in ASSESSMENT_GRAPHS[approach].stream(
            {"images": list(case.images), "claim": case.claim},
            context=run_context,
            config={"callbacks": [meter]},
            stream_mode="updates",
        ):
            if node in update:  # leaving the loop stops the run before its next step
                output = update[node]["fraud"].model_dump(mode="json")
                break
        else:
            error = f"the {approach} graph ended without its {node!r} step"
    except Exception as exc:
        error = _describe(exc)
    latency = (time.perf_counter() - started) * 1000
    return _outcome(output, latency, error, meter, models, meters.hosted)


def _outcome(
    output: Any,
    latency: float,
    error: str | None,
    meter: _TokenMeter,
    models: list,
    hosted: bool,
    stopped: bool = True,
) -> Outcome:
    """One call's outcome with every model's tokens and what it is billed for: its
    self-hosted models' share of the machine (the vision and damage models', and the text
    model's unless a server hosts it), the hosted tokens."""
    tokens_in = meter.input_tokens + sum(getattr(m, "input_tokens", 0) for m in models)
    tokens_out = meter.output_tokens + sum(getattr(m, "output_tokens", 0) for m in models)
    seconds = sum(m.seconds for m in models)
    billed: dict[str, Any] = {"compute_s": seconds + meter.seconds}
    if hosted:
        billed = {
            "compute_s": seconds,
            "hosted_input_tokens": meter.input_tokens,
            "hosted_output_tokens": meter.output_tokens,
        }
    return Outcome(output, latency, tokens_in, tokens_out, stopped, error, **billed)


def _chat(context: AgentContext, mode: str, question: QAPair, meters: _Meters) -> Outcome:
    meter = _TokenMeter(meters.text_clock)
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
    return _outcome(output, latency, error, meter, [], meters.hosted, stopped)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
