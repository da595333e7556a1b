"""The demo corpus's ground truth stays out of reach of both approaches (DESIGN.md, "The two
approaches"): its costs come from a generator no tool, model or evaluation may call."""

from __future__ import annotations

import ingest.taxonomy
from tests.test_layout import _import_graph

GENERATOR = "ingest.demo"
COST_MODULE = "ingest.demo.costs"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others.

    >>> sorted(_reachable({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, "a"))
    ['b', 'c']
    """
    seen: set[str] = set()
    todo = [start]
    while todo:
        for other in graph.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def test_no_tool_model_or_evaluation_can_reach_the_corpus_generator():
    graph = _import_graph()
    assert COST_MODULE in graph  # the check below looks for a module that exists
    assert COST_MODULE in _reachable(graph, "ingest.demo.corpus")  # and would find it
    checked = [m for m in graph if m.split(".")[0] in ("agents", "rag", "finetune")]
    assert "agents.tools" in checked and "finetune.vision_evaluation" in checked
    for module in checked:
        leaks = sorted(m for m in _reachable(graph, module) if m.startswith(GENERATOR))
        assert not leaks, f"{module} can reach the demo corpus generator through {leaks}"


def test_the_shared_taxonomy_holds_no_price():
    """A price table in the vocabulary every package imports would be one import away."""
    for name in ("repair_cost", "BASE_REPAIR_COST", "SEVERITY_COST_FACTOR", "table_cost"):
        assert not hasattr(ingest.taxonomy, name), name
