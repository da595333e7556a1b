"""The backend interface: one chat request in, a stream of events out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class GenerationError(RuntimeError):
    """A backend could not produce an answer; the message says what failed and what to change."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ChatRequest:
    """A chat request in OpenAI's message format (``{"role", "content", "tool_calls"...}``).

    ``tools`` are OpenAI tool dicts; ``tool_choice`` is ``auto``, ``none``, ``required`` or a tool
    name; ``response_schema`` (a JSON schema) asks for one JSON value that validates against it.
    ``adapter`` names the LoRA adapter to answer with (``None``: the base model).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    response_schema: dict[str, Any] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    adapter: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Event:
    """One step of a streamed answer: a text delta, a complete tool call, or the end."""

    text: str = ""
    tool_call: ToolCall | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None
    usage: Usage | None = None


class Backend(Protocol):
    """Generates answers for :class:`ChatRequest`s; the last event has ``finish_reason`` set."""

    name: str

    def stream(self, request: ChatRequest) -> Iterator[Event]: ...

    def adapters(self) -> list[str]: ...
