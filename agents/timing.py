"""Every node records when it ran, so that a run's timings show what overlapped."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from langgraph.runtime import Runtime


def timed(name: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Wrap a node ``(state, runtime) -> update`` so that its update carries its span."""

    def wrap(node: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(node)
        def run(state: dict, runtime: Runtime) -> dict:
            begin = time.time()
            started = state.get("started") or begin
            update = node(state, runtime) or {}
            end = time.time()
            span = {
                "start_ms": round((begin - started) * 1000, 3),
                "end_ms": round((end - started) * 1000, 3),
                "ms": round((end - begin) * 1000, 3),
            }
            extra = {} if state.get("started") else {"started": started}
            return {**update, **extra, "timings": {name: span}}

        return run

    return wrap


def total_ms(timings: dict[str, dict[str, float]]) -> float:
    """Wall time from the first node's start to the last node's end."""
    if not timings:
        return 0.0
    return round(max(t["end_ms"] for t in timings.values()), 3)
