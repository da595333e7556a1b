"""The mapping of a graph run's failures to API errors.

One request's chat model (its sampling, stop sequences and deadline) is
:func:`agents.chat_model.request_model`; its prompt's fit in the model's context window is
:func:`agents.chat_model.fit_max_tokens`, whose :class:`ContextLengthExceeded` is a 400 here.
"""

from __future__ import annotations

from agents.backends.base import ContextLengthExceeded, DeadlineExceeded
from api.server.errors import APIError


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
