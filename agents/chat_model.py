"""A LangChain chat model over a :class:`~agents.backends.base.Backend`.

Tools are rendered through the model's chat template (or the system prompt when the template
has no tool support) and the answer is grammar-constrained, so tool calls and structured outputs
always parse. ``with_adapter(name)`` answers with one of the backend's LoRA adapters without
reloading the base. Streaming yields text deltas and ``tool_call_chunks``; usage is reported on
every answer; async calls run the same code in an executor.

:func:`request_model` is one request's copy of the shared model (its sampling, stop sequences
and deadline; the backend and its weights are shared); :func:`fit_max_tokens` fits a prompt and
its ``max_tokens`` into the model's context window before anything runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Backend, ChatRequest, ContextLengthExceeded, DeadlineExceeded


class LocalChatModel(BaseChatModel):
    """Chat model whose tokens come from ``backend`` (in-process weights or a server)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any  # a Backend; Any keeps pydantic from validating the protocol
    adapter: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def _llm_type(self) -> str:
        return "tunegraph-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "adapter": self.adapter}

    def __repr_args__(self) -> list[tuple[str, Any]]:
        # LangChain serializes a chat model (for callbacks) through its repr, once per instance,
        # and every API request has its own copy: pydantic's repr of all fields costs ~0.5 ms.
        return [("backend", self.backend.name), ("adapter", self.adapter)]

    @property
    def model_label(self) -> str:
        """``base`` or ``base+adapter``, as recorded in an Assessment's ``models``."""
        return self.backend.name + (f"+{self.adapter}" if self.adapter else "")

    @property
    def context_window(self) -> int | None:
        """The most tokens (prompt and answer) the backend's model takes; None when unknown (a
        remote server enforces its own)."""
        return getattr(self.backend, "context_window", None)

    def count_tokens(self, messages: list[BaseMessage], **kwargs: Any) -> int | None:
        """``messages`` as a prompt of the backend's model, in its tokens (chat template
        applied, as generation does; ``kwargs`` as for a call: tools, adapter...); None when the
        backend cannot count (a remote server)."""
        count = getattr(self.backend, "count_tokens", None)
        return None if count is None else count(self._request(messages, None, kwargs))

    def with_adapter(self, adapter: str | None) -> LocalChatModel:
        """The same backend answering with another adapter (``None``: the base model)."""
        if adapter is not None and adapter not in self.backend.adapters():
            known = ", ".join(self.backend.adapters()) or "none loaded"
            raise ValueError(f"unknown adapter {adapter!r} (adapters: {known})")
        return self.model_copy(update={"adapter": adapter})

    # ---- generation ---------------------------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        calls = 0
        backend: Backend = self.backend
        for event in backend.stream(request):
            if event.text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=event.text))
                if run_manager:
                    run_manager.on_llm_new_token(event.text, chunk=chunk)
                yield chunk
            if event.tool_call:
                call = event.tool_call
                part = tool_call_chunk(
                    name=call.name, args=json.dumps(call.arguments), id=call.id, index=calls
                )
                calls += 1
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content="", tool_call_chunks=[part])
                )
            if event.finish_reason:
                usage = event.usage
                metadata = {"finish_reason": event.finish_reason, "model_name": self.model_label}
                yield ChatGenerationChunk(
                    message=AIMessageChunk(
                        content="",
                        response_metadata=metadata,
                        usage_metadata=(
                            {
                                "input_tokens": usage.input_tokens,
                                "output_tokens": usage.output_tokens,
                                "total_tokens": usage.total_tokens,
                            }
                            if usage
                            else None
                        ),
                        chunk_position="last",
                    ),
                    generation_info=metadata,
                )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> ChatRequest:
        return ChatRequest(
            messages=convert_to_openai_messages(messages),
            tools=kwargs.get("tools") or [],
            tool_choice=kwargs.get("tool_choice") or "auto",
            parallel_tool_calls=kwargs.get("parallel_tool_calls", True),
            response_schema=kwargs.get("response_schema"),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            stop=list(stop or []),
            adapter=kwargs.get("adapter", self.adapter),
            seed=kwargs.get("seed", self.seed),
        )

    # ---- tools and structured output ----------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools``; ``tool_choice`` is auto (default), none, any/required/True, or a name."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=_tool_choice(tool_choice), **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "json_schema",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers constrained to ``schema`` (a pydantic class or a JSON schema), parsed.

        ``method="json_schema"`` constrains the whole answer to the schema;
        ``method="function_calling"`` forces a call of a tool whose arguments are the schema.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw)
        if method != "json_schema":
            raise ValueError(f"unknown method {method!r}; use json_schema or function_calling")
        json_schema = schema.model_json_schema() if is_model else _plain_schema(schema)
        llm = self.bind(
            response_schema=json_schema,
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
        if not include_raw:
            return llm | parser

        def with_raw(raw: AIMessage) -> dict[str, Any]:
            # LangChain's own include_raw chain runs a thread pool per call; this one does not
            try:
                return {"raw": raw, "parsed": parser.invoke(raw), "parsing_error": None}
            except Exception as exc:
                return {"raw": raw, "parsed": None, "parsing_error": exc}

        return llm | RunnableLambda(with_raw)


class GenerationTimeout(DeadlineExceeded):
    """The answer was still being generated when the request's deadline passed."""


class GenerationCancelled(RuntimeError):
    """The request's ``cancel`` event was set (its client went away) while generating."""


class RequestChatModel(LocalChatModel):
    """One request's chat model: its own stop sequences, and a ``deadline``
    (``time.monotonic()``) and ``cancel`` event checked per token. The deadline covers the whole
    generation: the backend checks it before processing the prompt, between its chunks and
    between tokens (:class:`~agents.backends.base.DeadlineExceeded`), and this model again per
    streamed token."""

    stop: list[str] = Field(default_factory=list)
    deadline: float
    cancel: Any = None  # threading.Event

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> ChatRequest:
        request = super()._request(messages, stop, kwargs)
        request.deadline = self.deadline  # the backend stops its prompt processing too
        return request

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator[Any]:
        chunks = super()._stream(messages, [*(stop or []), *self.stop], run_manager, **kwargs)
        try:
            for chunk in chunks:
                # Checked per token: a timed-out answer frees the model at once.
                if time.monotonic() > self.deadline:
                    raise GenerationTimeout("the answer took longer than the request timeout")
                if self.cancel is not None and self.cancel.is_set():
                    raise GenerationCancelled("the client went away")
                yield chunk
        finally:
            chunks.close()


def request_model(
    llm: LocalChatModel, deadline: float, cancel: threading.Event | None = None, **sampling: Any
) -> RequestChatModel:
    """A copy of ``llm`` that answers with ``sampling`` (max_tokens, temperature, top_p, stop;
    None keeps ``llm``'s) and stops generating at ``deadline`` (``time.monotonic()``) or once
    ``cancel`` is set; the backend and its loaded weights are shared."""
    names = ("backend", "adapter", "seed", "max_tokens", "temperature", "top_p")
    fields = {name: getattr(llm, name) for name in names}
    fields.update({k: v for k, v in sampling.items() if v is not None})
    return RequestChatModel(**fields, deadline=deadline, cancel=cancel)


def fit_max_tokens(
    llm: Any, messages: list[BaseMessage], max_tokens: int | None, default: int, **options: Any
) -> int:
    """The ``max_tokens`` to answer ``messages`` with; ``options`` are the call's tools and
    answer schema: part of the prompt.

    The prompt is counted in the model's tokens, with its chat template, before anything runs
    and without waiting for the model. Asked-for ``max_tokens`` must fit beside it in the
    context window, or :class:`~agents.backends.base.ContextLengthExceeded` names the counts;
    without one, ``default`` is cut to the room the prompt leaves. A model that cannot count
    (a remote server, which checks itself; or none at all) gets the numbers as they are.
    """
    window = getattr(llm, "context_window", None)
    count = getattr(llm, "count_tokens", None)
    if not window or count is None:
        return max_tokens or default
    # counted with the base model's tokenizer: adapters keep its vocabulary, and the backend
    # checks the final prompt (with the adapter's template and any retrieved text) again
    prompt = count(messages, adapter=None, **options)
    wanted = max_tokens or min(default, window - prompt)
    if prompt + max(wanted, 1) > window:
        raise ContextLengthExceeded(prompt, max(wanted, 1), window)
    return wanted


def _tool_choice(choice: str | bool | dict[str, Any] | None) -> str:
    if choice is None or choice == "auto":
        return "auto"
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, dict):
        return choice["function"]["name"]
    return str(choice)


def _plain_schema(schema: dict[str, Any] | type) -> dict[str, Any]:
    """A JSON schema from a JSON schema, an OpenAI tool/function dict or a TypedDict."""
    if isinstance(schema, dict) and ("type" in schema or "properties" in schema):
        return schema
    return convert_to_openai_tool(schema)["function"]["parameters"]
