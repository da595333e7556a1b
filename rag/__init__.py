"""Embeddings, vector stores, hybrid retrieval and the claims database (issue 3)."""
