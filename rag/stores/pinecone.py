"""Pinecone serverless: the scale-out vector store, through the ``pinecone`` SDK directly.

One tunegraph namespace is one Pinecone namespace of a ``dotproduct`` index that has both a dense
and a sparse field (vectors are unit length, so dot product is cosine similarity). Keyword
search is a sparse query: documents carry BM25's saturated term frequencies (k1 = 1.2,
b = 0.75, a fixed average length of 64 terms) and a query weighs its terms equally. Pinecone
keeps no corpus statistics, so this is BM25 without IDF; LanceDB's full-text index is exact.

Writes inside a transaction are buffered and sent when it ends (deletes, then upserts in batches,
each retried with backoff on top of the SDK's own retries), so an interrupted ingest sends
nothing. A failure while sending leaves the bookkeeping unchanged, and re-running the same
ingest converges because every write is an idempotent upsert or delete. Bookkeeping (content
hashes of ingested files) lives in a local JSON file, since Pinecone has no place for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rag.filters import METADATA_FIELDS, Filter, normalise
from rag.stores.base import Document, Hit, VectorStore

K1, B, AVERAGE_LENGTH = 1.2, 0.75, 64.0
SPARSE_DIM = 1 << 31
_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "which",
        "with",
        "do",
        "does",
        "my",
        "me",
        "should",
        "i'm",
    ]
)


def sparse_terms(text: str) -> list[str]:
    """Lower-case word tokens without stop words.

    >>> sparse_terms("What is the torque of EM-C3's bolts?")
    ['torque', 'em', 'c3', 's', 'bolts']
    """
    return [t for t in re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower()) if t not in _STOP_WORDS]


def _term_index(term: str) -> int:
    return (
        int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big") % SPARSE_DIM
    )


def document_sparse(text: str) -> dict[str, list]:
    """BM25-saturated term frequencies as a Pinecone sparse vector."""
    terms = sparse_terms(text)
    norm = K1 * (1 - B + B * len(terms) / AVERAGE_LENGTH)
    weights: dict[int, float] = {}
    for term, tf in Counter(terms).items():
        index = _term_index(term)
        weights[index] = weights.get(index, 0.0) + tf * (K1 + 1) / (tf + norm)
    return {"indices": list(weights), "values": list(weights.values())}


def query_sparse(text: str) -> dict[str, list]:
    indices = sorted({_term_index(t) for t in sparse_terms(text)})
    return {"indices": indices, "values": [1.0] * len(indices)}


class PineconeStore(VectorStore):
    def __init__(
        self,
        client: Any,
        index_name: str,
        namespace: str,
        dim: int,
        state_file: Path,
        *,
        cloud: str = "aws",
        region: str = "us-east-1",
        batch_size: int = 100,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name, self.dim = namespace, dim
        self._client, self._index_name = client, index_name
        self._state_file = Path(state_file)
        self._batch_size, self._retries, self._backoff_s, self._sleep = (
            batch_size,
            retries,
            backoff_s,
            sleep,
        )
        if not client.has_index(index_name):
            client.indexes.create(
                name=index_name,
                schema={
                    "fields": {
                        "_values": {
                            "type": "dense_vector",
                            "dimension": dim,
                            "metric": "dotproduct",
                        },
                        "_sparse_values": {"type": "sparse_vector"},
                    }
                },
                deployment={"deployment_type": "managed", "cloud": cloud, "region": region},
            )
        description = client.describe_index(index_name)
        if getattr(description, "dimension", dim) not in (dim, None):
            raise ValueError(
                f"Pinecone index {index_name!r} has dimension {description.dimension}, the "
                f"embedding model makes {dim}; use another index name."
            )
        self._index = client.Index(host=description.host)
        self._buffer: list[tuple[str, Any]] | None = None
        self._pending_state: dict[str, Any] | None = None

    # ---- bookkeeping ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        if self._pending_state is not None:
            return dict(self._pending_state)
        try:
            return json.loads(self._state_file.read_text("utf-8"))
        except FileNotFoundError:
            return {}

    def set_state(self, state: dict[str, Any]) -> None:
        if self._pending_state is None:
            raise RuntimeError("set_state() must be called inside a transaction")
        self._pending_state = dict(state)

    # ---- writes ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._buffer is not None:
            yield
            return
        self._buffer, self._pending_state = [], self.state()
        try:
            yield
            for action, payload in self._buffer:
                if action == "delete":
                    self._call(lambda p=payload: self._index.delete(namespace=self.name, **p))
                else:
                    self._call(lambda p=payload: self._index.upsert(vectors=p, namespace=self.name))
            self._write_state(self._pending_state)
        finally:
            self._buffer, self._pending_state = None, None

    def _write_state(self, state: dict[str, Any]) -> None:
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._state_file.parent, prefix=".pinecone-state.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
        os.replace(tmp, self._state_file)

    def _call(self, request: Callable[[], Any]) -> Any:
        from pinecone.errors import (
            PineconeConnectionError,
            PineconeTimeoutError,
            RateLimitError,
            ServiceError,
        )

        for attempt in range(self._retries + 1):
            try:
                return request()
            except (RateLimitError, ServiceError, PineconeConnectionError, PineconeTimeoutError):
                if attempt == self._retries:
                    raise
                self._sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def upsert(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        if len(documents) != len(vectors):
            raise ValueError(f"{len(documents)} documents but {len(vectors)} vectors")
        with self.transaction():
            records = [
                {
                    "id": doc.id,
                    "values": [float(v) for v in vector],
                    "sparse_values": document_sparse(doc.text),
                    "metadata": {"text": doc.text, **_metadata(doc.metadata)},
                }
                for doc, vector in zip(documents, vectors, strict=True)
            ]
            for start in range(0, len(records), self._batch_size):
                self._buffer.append(("upsert", records[start : start + self._batch_size]))

    def delete(self, ids: Sequence[str] = (), filter: Filter | None = None) -> None:
        with self.transaction():
            if ids:
                for start in range(0, len(ids), 1000):
                    self._buffer.append(("delete", {"ids": list(ids[start : start + 1000])}))
            if filter:
                self._buffer.append(("delete", {"filter": normalise(filter)}))

    # ---- reads -------------------------------------------------------------------------------

    def _query(self, k: int, filter: Filter | None, **query: Any) -> list[Hit]:
        response = self._call(
            lambda: self._index.query(
                namespace=self.name,
                top_k=k,
                filter=normalise(filter) or None,
                include_metadata=True,
                **query,
            )
        )
        return [_hit(match) for match in response.matches]

    def dense_search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        return self._query(k, filter, vector=[float(v) for v in vector])

    def keyword_search(self, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        sparse = query_sparse(query)
        if not sparse["indices"]:
            return []
        hits = self._query(k, filter, vector=[0.0] * self.dim, sparse_vector=sparse)
        return [h for h in hits if h.score > 0]

    def count(self, filter: Filter | None = None) -> int:
        if filter:  # serverless stats take no filter: count matching ids instead
            return len(self._query(10_000, filter, vector=[0.0] * self.dim))
        stats = self._call(lambda: self._index.describe_index_stats())
        namespace = stats.namespaces.get(self.name)
        return int(namespace.vector_count) if namespace else 0


def _metadata(metadata: Any) -> dict[str, Any]:
    values = {}
    for field, kind in METADATA_FIELDS.items():
        value = metadata.get(field)
        if value not in (None, ""):
            values[field] = int(value) if kind is int else str(value)
    return values


def _hit(match: Any) -> Hit:
    metadata = dict(match.metadata or {})
    text = metadata.pop("text", "")
    if "date" in metadata:  # Pinecone returns numbers as floats
        metadata["date"] = int(metadata["date"])
    return Hit(match.id, text, float(match.score), metadata)
