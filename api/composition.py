"""Builds the objects the commands and the app use from :class:`Settings` (the composition root)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.settings import Settings

if TYPE_CHECKING:
    from finetune.model_store import ModelStore
    from rag.claims_db import ClaimsDatabase
    from rag.embeddings import Embedder
    from rag.stores.base import VectorStore

CLAIMS = "claims"


def model_store(settings: Settings) -> ModelStore:
    from finetune.model_store import ModelStore, ModelStoreConfig

    return ModelStore(
        ModelStoreConfig(
            cache_dir=settings.models_dir,
            adapters_dir=settings.adapters_dir,
            allow_network=settings.allow_network,
            device=settings.device,
        )
    )


def embedder(settings: Settings) -> Embedder:
    from rag.embeddings import Embedder

    name = settings.embedding_model
    return Embedder(model_store(settings).load_embedder(name), name)


def vector_store(settings: Settings, namespace: str, dim: int) -> VectorStore:
    """The configured backend's store for one namespace (``manuals`` or ``claims``)."""
    if settings.vector_store == "pinecone":
        from pinecone import Pinecone

        from rag.stores.pinecone import PineconeStore

        client = Pinecone(
            api_key=settings.pinecone_api_key,
            **({"host": settings.pinecone_host} if settings.pinecone_host else {}),
        )
        state = settings.indexes_dir / "pinecone" / f"{settings.pinecone_index}-{namespace}.json"
        return PineconeStore(client, settings.pinecone_index, namespace, dim, state)
    from rag.stores.lancedb import LanceDBStore

    return LanceDBStore(settings.indexes_dir / "lancedb", namespace, dim)


def claims_database(settings: Settings) -> ClaimsDatabase:
    from rag.claims_db import ClaimsDatabase

    settings.home.mkdir(parents=True, exist_ok=True)
    return ClaimsDatabase(settings.effective_database_url)
