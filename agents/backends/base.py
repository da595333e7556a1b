"""The backend interface: one chat request in, a stream of events out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class GenerationError(RuntimeError):
    """A backend could not produce an answer; the message says what failed and what to change."""


class ContextLengthExceeded(ValueError):
    """A prompt and its ``max_tokens`` do not fit the model's context window (a caller's error,
    not a failed generation: retrying the same request cannot help)."""

    def __init__(self, prompt_tokens: int, max_tokens: int, window: int) -> None:
        self.prompt_tokens, self.max_tokens, self.window = prompt_tokens, max_tokens, window
        super().__init__(
            f"the prompt is {prompt_tokens:,} tokens and max_tokens is {max_tokens:,}: "
            f"{prompt_tokens + max_tokens:,} in all, above the model's context window of "
            f"{window:,} tokens; shorten the messages or lower max_tokens"
        )


class DeadlineExceeded(RuntimeError):
    """The request's ``deadline`` passed before its answer was complete."""


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
    ``adapter`` names the LoRA adapter to answer with (``None``: the base model). ``deadline``
    (``time.monotonic()``) bounds the whole generation, prompt processing included.
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
    deadline: float | None = None


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
