"""Errors a graph run ends with; each message says what failed and what to change."""


class AgentError(RuntimeError):
    """A graph could not produce its answer (a model kept returning invalid output, a
    required tool failed)."""
