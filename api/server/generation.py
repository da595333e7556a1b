"""One request's view of the shared chat model (its sampling, stop sequences and deadline), its
prompt's fit in the model's context window, and the mapping of graph failures to API errors.

The deadline covers the whole generation: the backend checks it before processing the prompt,
between its chunks and between tokens (:class:`agents.backends.base.DeadlineExceeded`), and this
module's model checks it again per streamed token.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

from agents.backends.base import ContextLengthExceeded, DeadlineExceeded
from api.server.errors import APIError


class GenerationTimeout(DeadlineExceeded):
    """The answer was still being generated when the request's deadline passed."""


class GenerationCancelled(RuntimeError):
    """The request's ``cancel`` event was set (its client went away) while generating."""


def request_model(
    llm: Any, deadline: float, cancel: threading.Event | None = None, **sampling: Any
) -> Any:
    """A copy of ``llm`` (a :class:`agents.chat_model.LocalChatModel`) that answers with
    ``sampling`` (max_tokens, temperature, top_p, stop) and stops generating at ``deadline``
    (``time.monotonic()``) or once ``cancel`` is set; the backend and its loaded weights are
    shared."""
    if llm is None:
        raise APIError(503, "no chat model is configured", code="model_unavailable")
    names = ("backend", "adapter", "seed", "max_tokens", "temperature", "top_p")
    fields = {name: getattr(llm, name) for name in names}
    fields.update({k: v for k, v in sampling.items() if v is not None})
    return _request_chat_model()(**fields, deadline=deadline, cancel=cancel)


@functools.cache
def _request_chat_model() -> type:
    # Built on first use: importing the chat model pulls in LangChain.
    from pydantic import Field

    from agents.chat_model import LocalChatModel

    class RequestChatModel(LocalChatModel):
        stop: list[str] = Field(default_factory=list)
        deadline: float
        cancel: Any = None  # threading.Event

        def _request(self, messages, stop, kwargs) -> Any:
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

    return RequestChatModel


def fit_max_tokens(
    llm: Any, messages: list[Any], max_tokens: int | None, default: int, **options: Any
) -> int:
    """The ``max_tokens`` to answer ``messages`` (LangChain messages) with; ``options`` are
    the call's tools and answer schema (``ChatParams.model_options()``): part of the prompt.

    The prompt is counted in the model's tokens, with its chat template, before anything runs
    and without waiting for the model. Asked-for ``max_tokens`` must fit beside it in the
    context window, or the answer is a 400 ``context_length_exceeded`` naming the counts;
    without one, ``default`` is cut to the room the prompt leaves. A model that cannot count
    (a remote server, which checks itself) gets the numbers as they are.
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
        raise APIError(
            400,
            str(ContextLengthExceeded(prompt, max(wanted, 1), window)),
            param="messages",
            code="context_length_exceeded",
        )
    return wanted


def api_error(exc: Exception, timeout_s: int) -> APIError | None:
    """The API error for a graph run's failure, or None for an unexpected one (a 500)."""
    from agents.backends.base import GenerationError
    from agents.context import MissingDependencyError
    from agents.errors import AgentError

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextLengthExceeded):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, DeadlineExceeded):
        return APIError(
            504,
            f"generation took longer than {timeout_s} s (TUNEGRAPH_GENERATION_TIMEOUT_S); "
            "send a shorter prompt, ask for fewer max_tokens or retry",
            code="timeout",
        )
    if isinstance(exc, MissingDependencyError):
        return APIError(503, str(exc), code="dependency_missing")
    if isinstance(exc, AgentError | GenerationError):
        return APIError(500, str(exc), code="generation_failed")
    return None
