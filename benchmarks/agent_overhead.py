"""What LangGraph adds to an agentic assessment: the assess_agentic graph with instant fake
models against the same node functions called one after another in plain Python.

Both sides do the same work (the real tools over a SQLite claims history, instant fakes for the
damage model, manual retrieval and report model), so the difference is the graph's overhead:
scheduling, state channels and reducers, the parallel branch's thread hand-off.

    python benchmarks/agent_overhead.py [--quick]

Last line: {"overhead_p50_ms": ..., "graph_p50_ms": ..., "direct_p50_ms": ...}
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from langgraph.runtime import Runtime
from PIL import Image

from agents.backends.base import ChatRequest, Event, Usage
from agents.chat_model import LocalChatModel
from agents.context import AgentContext
from agents.graphs import assess_agentic
from ingest.assessment import Damage
from ingest.claims import Claim
from rag.claims_db import ClaimsDatabase
from rag.stores.base import Hit


class InstantBackend:
    name = "instant"

    def adapters(self) -> list[str]:
        return ["ft"]

    def stream(self, request: ChatRequest):
        yield Event(text=json.dumps({"report": "Hood dent; repair.", "cited": []}))
        yield Event(finish_reason="stop", usage=Usage(1, 1))


class InstantDamage:
    name = "instant-damage"

    def detect(self, images):
        return [Damage(type="dent", part="hood", severity="moderate")]


class InstantRetriever:
    def search(self, query, k=5, filter=None, mode="hybrid"):
        return [Hit("blk-1", "Hood dent repair procedure.", 0.9, {})]


def _context(folder: Path) -> AgentContext:
    database = ClaimsDatabase(f"sqlite:///{folder / 'claims.db'}")
    day = date(2025, 3, 1)
    database.upsert(
        [
            Claim(
                f"C-{i}",
                f"POL-{i % 7}",
                "1HGCM82633A004352" if i % 7 == 0 else f"2FTRX18W1XCA{i:05d}",
                day - timedelta(days=30 * i),
                "hood dent",
                "hood",
                "dent",
                "moderate",
                700.0 + i,
                policy_start=date(2020, 1, 1),
            )
            for i in range(1, 200)
        ]
    )
    return AgentContext(
        llm=LocalChatModel(backend=InstantBackend()),
        finetuned_adapter="ft",
        manuals=InstantRetriever(),
        claims_db=database,
        damage_model=InstantDamage(),
    )


def _image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _direct(state: dict, context: AgentContext) -> dict:
    """The graph's nodes in plain Python, merging updates the way the reducers do."""
    runtime = Runtime(context=context)
    for function in _FUNCTIONS.values():
        update = getattr(assess_agentic, function)(state, runtime)
        for key, value in update.items():
            if key in ("timings", "models"):
                state[key] = {**state.get(key, {}), **value}
            elif key == "errors":
                state[key] = state.get(key, []) + value
            else:
                state[key] = value
    return state


_FUNCTIONS = {
    "damage": "detect_damage",
    "manual": "retrieve_manual",
    "claims": "check_claims",
    "cost": "estimate_cost",
    "fraud": "detect_fraud",
    "report": "write_report",
    "assemble": "assemble",
}


def _times(run, n: int) -> list[float]:
    run()  # warm-up
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (still < 1 minute)")
    args = parser.parse_args()
    n = 50 if args.quick else 300
    claim = {"vin": "1HGCM82633A004352", "policy_id": "POL-0", "incident_date": "2025-03-01",
             "description": "hood dent", "claimed_amount": 900}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        context = _context(Path(folder))
        images = [_image()]

        def graph():
            out = assess_agentic.graph.invoke({"images": images, "claim": claim}, context=context)
            assert "assessment" in out

        def direct():
            assert "assessment" in _direct({"images": images, "claim": claim}, context)

        # Interleave the two sides so that machine noise hits both alike.
        graph_ms, direct_ms = [], []
        for _ in range(5):
            graph_ms += _times(graph, n // 5)
            direct_ms += _times(direct, n // 5)
    g50, d50 = statistics.median(graph_ms), statistics.median(direct_ms)
    g95 = statistics.quantiles(graph_ms, n=20)[-1]
    d95 = statistics.quantiles(direct_ms, n=20)[-1]
    print(f"{n} runs each: graph p50 {g50:.2f} ms p95 {g95:.2f} ms; "
          f"direct p50 {d50:.2f} ms p95 {d95:.2f} ms")  # fmt: skip
    print(json.dumps({
        "overhead_p50_ms": round(g50 - d50, 2),
        "graph_p50_ms": round(g50, 2),
        "direct_p50_ms": round(d50, 2),
        "ratio_graph_vs_direct": round(g50 / d50, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
