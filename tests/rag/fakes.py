"""A deterministic stand-in for the embedding model, so store tests need no weights."""

from __future__ import annotations

import hashlib

import numpy as np

DIM = 16


def vector(text: str) -> np.ndarray:
    """A unit vector that depends only on the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class HashEmbedder:
    name, dim = "hash", DIM

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts, progress=None) -> np.ndarray:
        self.calls += 1
        if progress:
            progress(len(texts))
        return np.stack([vector(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return vector(text)
