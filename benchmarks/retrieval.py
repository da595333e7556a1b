"""Retrieval on the demo manual: quality of dense, BM25 and hybrid side by side, query latency at
10k and 100k chunks, and ingest throughput.

Baseline, measured in the same run: dense-only search (recall) and the dense query (latency).
The 10k/100k indexes are the demo manual's real chunks plus filler chunks: random word texts
with random unit vectors (embedding 100k filler texts would take ~35 minutes on 2 cores and
does not change how long a query takes). Recall is measured again at 100k, with the filler in.

    python benchmarks/retrieval.py [--quick]

Last line: {"recall@5_hybrid": ..., "recall@5_dense": ..., "p95_ms_100k": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from finetune.model_store import ModelStore, ModelStoreConfig
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from rag.embeddings import Embedder
from rag.indexing import index_manuals
from rag.retrieval import RetrievalQuestion, Retriever, evaluate
from rag.stores.base import Document
from rag.stores.lancedb import LanceDBStore


def _questions(path: Path) -> list[RetrievalQuestion]:
    lines = path.read_text("utf-8").splitlines()
    return [RetrievalQuestion(**json.loads(line)) for line in lines]


def _add_filler(store: LanceDBStore, n: int, dim: int, seed: int) -> None:
    rng, words = np.random.default_rng(seed), [f"term{i}" for i in range(20_000)]
    pick = random.Random(seed)
    with store.transaction():
        for start in range(0, n, 20_000):
            size = min(20_000, n - start)
            docs = [
                Document(
                    f"filler-{seed}-{start + i}",
                    " ".join(pick.choices(words, k=40)),
                    {"kind": "EXPLANATION", "source": "filler"},
                )
                for i in range(size)
            ]
            vectors = rng.normal(size=(size, dim)).astype(np.float32)
            store.upsert(docs, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def _latency_ms(retriever: Retriever, queries: list[str], mode: str) -> dict[str, float]:
    retriever.search(queries[0], 5, mode=mode)  # warm-up
    times = []
    for query in queries:
        started = time.perf_counter()
        retriever.search(query, 5, mode=mode)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50": round(statistics.median(times), 1),
        "p95": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 latency queries (< 5 minutes)")
    args = parser.parse_args()
    n_latency = 60 if args.quick else 300

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        corpus = generate_demo_corpus(
            home / "demo", DemoCorpusConfig(n_claims=50, n_images=12, n_scanned_pages=10)
        )
        manual_dir = corpus.root / "manual"
        store_config = ModelStoreConfig(home / "models", home / "adapters", device="cpu")
        embedder = Embedder(
            ModelStore(store_config).load_embedder("all-minilm-l6-v2"), "all-minilm-l6-v2"
        )
        store = LanceDBStore(home / "index", "manuals", embedder.dim)

        # Ingest throughput: the PDF into the manual index, the scanned pages (OCR) into their
        # own namespace, as `tunegraph demo` does (they are the same pages: mixing them into one
        # index would fill the top 5 with near-duplicates).
        started = time.perf_counter()
        report = index_manuals([manual_dir / "vehicle_manual.pdf"], store, embedder)
        scans = LanceDBStore(home / "index", "manual_scans", embedder.dim)
        scan_report = index_manuals([manual_dir / "scans"], scans, embedder)
        ingest_s = time.perf_counter() - started
        pages = corpus.counts["manual"]["pages"] + len(scan_report.ingested)
        chunks = report.chunks + scan_report.chunks
        print(
            f"ingest: {pages} pages ({len(scan_report.ingested)} scanned), {chunks} chunks in "
            f"{ingest_s:.1f} s; rejected: {report.rejected + scan_report.rejected or 'none'}"
        )

        questions = _questions(manual_dir / "qa" / "test_retrieval.jsonl")
        retriever = Retriever(embedder, store)
        quality = evaluate(retriever, questions, k=5)
        for mode, scores in quality.items():
            print(f"{store.count():>7} chunks  {mode:<7} {json.dumps(scores)}")

        queries = [q.q for q in random.Random(0).choices(questions, k=n_latency)]
        latency = {}
        for total in (10_000, 100_000):
            _add_filler(store, total - store.count(), embedder.dim, seed=total)
            latency[total] = {m: _latency_ms(retriever, queries, m) for m in ("dense", "hybrid")}
            print(f"{store.count():>7} chunks  latency ms {json.dumps(latency[total])}")
        quality_100k = evaluate(retriever, questions, k=5)
        print(f"{store.count():>7} chunks  hybrid {json.dumps(quality_100k['hybrid'])}")

    print(
        json.dumps(
            {
                "recall@5_hybrid": quality["hybrid"]["recall@5"],
                "recall@5_dense": quality["dense"]["recall@5"],
                "recall@5_bm25": quality["bm25"]["recall@5"],
                "mrr_hybrid": quality["hybrid"]["mrr"],
                "recall@5_hybrid_100k": quality_100k["hybrid"]["recall@5"],
                "p95_ms_10k": latency[10_000]["hybrid"]["p95"],
                "p95_ms_100k": latency[100_000]["hybrid"]["p95"],
                "p95_ms_100k_dense": latency[100_000]["dense"]["p95"],
                "hybrid_vs_dense_p95": round(
                    latency[100_000]["hybrid"]["p95"] / latency[100_000]["dense"]["p95"], 2
                ),
                "ingest_pages_per_s": round(pages / ingest_s, 2),
                "ingest_chunks_per_s": round(chunks / ingest_s, 1),
                "ingest_demo_manual_s": round(ingest_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
