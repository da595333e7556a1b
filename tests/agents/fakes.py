"""Fakes for graph tests: a scripted backend behind the real chat-model adapter (so streaming
carries text and ``tool_call_chunks``), a damage model, a vision model, stand-ins for the models
inside the real damage tool and vision assessor (they look at the decoded pictures), and a
retriever."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from agents.backends.base import ChatRequest, Event, GenerationError, ToolCall, Usage
from agents.chat_model import LocalChatModel
from ingest.assessment import Damage
from rag.stores.base import Hit


@dataclass
class ScriptedBackend:
    """Answers with the next scripted reply: a string (streamed word by word), a list of
    ``(tool_name, arguments)`` calls, or an exception to raise. Records every request."""

    replies: list = field(default_factory=list)
    name: str = "fake-llm"
    adapter_names: tuple[str, ...] = ("ft",)
    requests: list[ChatRequest] = field(default_factory=list)

    def adapters(self) -> list[str]:
        return list(self.adapter_names)

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        self.requests.append(request)
        if not self.replies:
            raise GenerationError("the script has no reply left")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, list):
            for i, (name, arguments) in enumerate(reply):
                yield Event(tool_call=ToolCall(name, arguments, f"call_{len(self.requests)}_{i}"))
            yield Event(finish_reason="tool_calls", usage=Usage(10, 5))
            return
        words = reply.split(" ")
        for i, word in enumerate(words):
            yield Event(text=word if i == 0 else f" {word}")
        yield Event(finish_reason="stop", usage=Usage(10, len(words)))


def fake_llm(*replies) -> LocalChatModel:
    return LocalChatModel(backend=ScriptedBackend(list(replies)))


def report_json(text: str = "Dent on the hood; repair per the manual.", cited=()) -> str:
    return json.dumps({"report": text, "cited": list(cited)})


@dataclass
class FakeDamageModel:
    damages: list[Damage]
    name: str = "fake-damage@1"
    error: Exception | None = None
    calls: int = 0

    @classmethod
    def of_hood_dent(cls) -> FakeDamageModel:
        return cls([Damage(type="dent", part="hood", severity="moderate", confidence=0.9)])

    def detect(self, images: Sequence[bytes]) -> list[Damage]:
        self.calls += 1
        if self.error:
            raise self.error
        return self.damages


@dataclass
class FakeVision:
    answers: list[str]
    name: str = "fake-vlm@1"
    feedback: list = field(default_factory=list)

    def assess(self, images, claim, feedback=None) -> str:
        self.feedback.append(feedback)
        return self.answers.pop(0)


@dataclass
class SeeingClassifier:
    """Stands in for the image classifier inside the real ``DamageDetector``: sees ``damage``
    in every picture it is given, and records the pictures' sizes."""

    damage: Damage
    task: str = "damage"
    name: str = "seeing-damage@1"
    sizes: list = field(default_factory=list)

    def damages(self, pictures):
        self.sizes += [p.size for p in pictures]
        return [[self.damage] for _ in pictures]


@dataclass
class SeeingVLM:
    """Stands in for the vision-language model inside the real ``VisionLMAssessor``: answers
    the next of ``answers`` (JSON; the last one repeats) for every picture of a call, and
    records the pictures' sizes."""

    answers: list[str]
    name: str = "seeing-vlm@1"
    sizes: list = field(default_factory=list)

    def answer(self, pictures, temperature=0.0):
        from finetune.vision_lm.generation import Generated

        self.sizes += [p.size for p in pictures]
        text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [Generated(text, 10, True) for _ in pictures]


@dataclass
class FakeRetriever:
    """Returns the same blocks for every query (after ``delay_s``); records queries;
    ``support_score`` is what :meth:`support` says of any passages (records what it was asked)."""

    hits: list[Hit]
    delay_s: float = 0.0
    error: Exception | None = None
    queries: list = field(default_factory=list)
    support_score: float = 1.0
    supports: list = field(default_factory=list)

    def support(self, query, texts):
        self.supports.append((query, list(texts)))
        return self.support_score

    def search(self, query, k=5, filter=None, mode="hybrid"):
        self.queries.append((query, k, filter))
        time.sleep(self.delay_s)
        if self.error:
            raise self.error
        kind = (filter or {}).get("kind")
        return [h for h in self.hits if kind is None or h.metadata.get("kind") == kind][:k]


def fake_engine_builds(monkeypatch) -> list[str]:
    """Replace the engine's model builder with one that writes a small fake build in no time;
    the names of the builds it made."""
    from finetune import onnx_build

    runs: list[str] = []

    def builder(source, out, name, precision, lora, log):
        runs.append(name)
        (out / "model.onnx").write_bytes(b"graph")
        (out / "model.onnx.data").write_bytes(b"weights" * 100)

    monkeypatch.setattr(onnx_build, "_run_builder", builder)
    return runs
