"""The interface every vector store implements, and the records that cross it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.filters import Filter


@dataclass(frozen=True)
class Document:
    """A chunk to index: stable id, the text to search, and filterable metadata."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float  # higher is better; comparable only within one search mode
    metadata: dict[str, Any]


class VectorStore(ABC):
    """A namespace of documents with dense vectors and keyword (BM25) search.

    Writes happen inside :meth:`transaction`: readers keep seeing the last committed state until
    the transaction ends, and a crash inside it leaves that state in place.
    """

    name: str

    @abstractmethod
    def upsert(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        """Insert or replace documents by id; ``vectors`` is (n, dim), L2-normalised."""

    @abstractmethod
    def delete(self, ids: Sequence[str] = (), filter: Filter | None = None) -> None:
        """Delete documents by id and/or by metadata filter."""

    @abstractmethod
    def dense_search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[Hit]:
        """Nearest documents by cosine similarity."""

    @abstractmethod
    def keyword_search(self, query: str, k: int, filter: Filter | None = None) -> list[Hit]:
        """Best documents by BM25 over their text."""

    @abstractmethod
    def count(self, filter: Filter | None = None) -> int:
        """How many committed documents match."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group writes: all of them become visible when the block ends without an error."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Bookkeeping stored with the committed index (e.g. content hashes of ingested files)."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the bookkeeping, inside a transaction; it commits with the transaction."""

    def documents(self, filter: Filter | None = None) -> list[Document]:
        """Every committed document that matches, vectors left out (e.g. to build training data
        from an ingested manual). Stores that cannot list their contents raise
        ``NotImplementedError`` naming what to do instead."""
        raise NotImplementedError(
            f"the {type(self).__name__} index cannot list its documents; give the manual's "
            "files instead (data.manual=PATH)"
        )
