"""Dense, BM25 and hybrid retrieval over one vector store, and recall/MRR evaluation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rag.embeddings import Embedder
from rag.filters import Filter
from rag.stores.base import Hit, VectorStore

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "bm25", "hybrid")
RRF_K = 60  # the constant of Cormack et al.'s reciprocal rank fusion
# Codes such as P0117, EM-C3 or F19: a capital letter first, a digit somewhere.
_IDENTIFIER = re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*\b")
_FAULT_CODE = re.compile(r"\b[PCBU][0-3][0-9A-F]{3}\b")


def identifiers(query: str) -> list[str]:
    """Fault codes, connector and part numbers named in a query.

    >>> identifiers("Is P0117 on connector EM-C3 of the Halden Vireo 1.6T?")
    ['P0117', 'EM-C3']
    """
    return [t for t in _IDENTIFIER.findall(query) if any(c.isdigit() for c in t)]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """Fuse ranked lists: each hit scores sum(1 / (RRF_K + rank)) over the lists it is in.

    >>> a, b, c = (Hit(i, i, 0.0, {}) for i in "abc")
    >>> [h.id for h in reciprocal_rank_fusion([[a, b], [b, c]], k=3)]
    ['b', 'a', 'c']
    """
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(hit.id, hit)
    ordered = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    return [Hit(i, first[i].text, scores[i], first[i].metadata) for i in ordered]


@dataclass
class Retriever:
    embedder: Embedder
    store: VectorStore
    candidates: int = 4  # each list fused by hybrid search holds k * candidates hits

    def search(
        self, query: str, k: int = 5, filter: Filter | None = None, mode: Mode = "hybrid"
    ) -> list[Hit]:
        if mode == "bm25":
            return self.store.keyword_search(query, k, filter)
        vector = self.embedder.embed_query(query)
        if mode == "dense":
            return self.store.dense_search(vector, k, filter)
        if mode != "hybrid":
            raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        depth = k * self.candidates
        rankings = [
            self.store.dense_search(vector, depth, filter),
            self.store.keyword_search(query, depth, filter),
        ]
        # In a long question a rare code is outvoted by common words in BM25 and means little to
        # an embedding model, so exact identifiers get a ranked list of their own.
        if codes := identifiers(query):
            rankings.append(self.store.keyword_search(" ".join(codes), depth, filter))
        fused = reciprocal_rank_fusion(rankings, k)
        # A fault code names one entry: the blocks that contain it come first. (Fused alone, a
        # question such as "The <vehicle> has P0612 stored" ranked blocks about the vehicle
        # above the P0612 entry: the demo's troubleshooting recall@3 was 0.55, now 1.0.)
        if fault_codes := _FAULT_CODE.findall(query):
            found = self.store.keyword_search(" ".join(fault_codes), k, filter)
            exact = [h for h in found if any(c in h.text for c in fault_codes)]
            first = {h.id for h in exact}
            top = fused[0].score if fused else 0.0  # scores stay on the fused scale
            exact = [Hit(h.id, h.text, top, h.metadata) for h in exact]
            fused = (exact + [h for h in fused if h.id not in first])[:k]
        return fused

    def support(self, query: str, texts: Sequence[str]) -> float:
        """How well the best of ``texts`` (what a search found) bears on ``query``: the highest
        cosine similarity of their embeddings; 0 when there is none, or when the query names
        fault codes that none of them contains."""
        if not texts:
            return 0.0
        codes = _FAULT_CODE.findall(query)
        if codes and not any(c in text for c in codes for text in texts):
            return 0.0
        vectors = self.embedder.embed([query, *texts])
        return float((vectors[1:] @ vectors[0]).max())


@dataclass(frozen=True)
class RetrievalQuestion:
    q: str
    must: str  # a text that a relevant chunk contains


class QuestionsError(ValueError):
    """A questions file that cannot be read; the message names the file and line."""


def read_questions(path: Path) -> list[RetrievalQuestion]:
    """The questions of a JSONL file whose lines hold "q" (the question) and "must" (a text a
    relevant chunk contains); :class:`QuestionsError` names the first bad line."""
    import json

    try:
        text = Path(path).read_text("utf-8")
    except UnicodeDecodeError:
        raise QuestionsError(f"{path}: not UTF-8; re-save it as UTF-8 JSONL.") from None
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            items.append(RetrievalQuestion(str(record["q"]), str(record["must"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise QuestionsError(
                f'{path} line {number}: need a JSON object with "q" and "must" ({exc})'
            ) from None
    if not items:
        raise QuestionsError(f"{path} holds no questions.")
    return items


def evaluate(
    retriever: Retriever,
    questions: Sequence[RetrievalQuestion],
    k: int = 5,
    filter: Filter | None = None,
) -> dict[str, dict[str, float]]:
    """recall@1, recall@k and MRR (over the top k) for every mode, side by side."""
    results = {}
    for mode in MODES:
        first_ranks = []
        for question in questions:
            hits = retriever.search(question.q, k, filter, mode)
            needle = _norm(question.must)
            rank = next((i for i, h in enumerate(hits, 1) if needle in _norm(h.text)), None)
            first_ranks.append(rank)
        n = len(questions) or 1
        results[mode] = {
            "recall@1": round(sum(r == 1 for r in first_ranks) / n, 4),
            f"recall@{k}": round(sum(r is not None for r in first_ranks) / n, 4),
            "mrr": round(sum(1 / r for r in first_ranks if r) / n, 4),
        }
    return results


def _norm(text: str) -> str:
    return " ".join(text.lower().split())
