"""Batched, L2-normalised sentence embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class Embedder:
    """Wraps a loaded sentence-transformers model (see ``finetune.model_store``)."""

    def __init__(self, model: Any, name: str, batch_size: int = 64) -> None:
        self.model, self.name, self.batch_size = model, name, batch_size
        self.dim = len(model.encode(["dimension probe"])[0])

    def embed(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; ``progress(n)`` after each batch of n."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            chunks.append(
                self.model.encode(
                    batch,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )
            if progress:
                progress(len(batch))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
