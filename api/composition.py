"""Builds the objects the commands and the app use from :class:`Settings` (the composition root)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.settings import Settings, env_name

if TYPE_CHECKING:
    from agents.backends.base import Backend
    from agents.compare import TrainedModels
    from agents.context import AgentContext
    from finetune.evaluation import Answerer
    from finetune.manual_data import Search
    from finetune.model_store import ModelStore
    from finetune.tool_data import ToolRunner
    from finetune.workspace import Workspace
    from ingest.records import ManualBlock
    from rag.claims_db import ClaimsDatabase
    from rag.embeddings import Embedder
    from rag.retrieval import Retriever
    from rag.stores.base import VectorStore

MANUALS = "manuals"
CLAIMS = "claims"
DAMAGE_MODEL = "damage-model"
VISION_LM = "damage-vlm"
# under the API's logger ("tunegraph.api"), so the server's log shows engine builds and fallbacks
log = logging.getLogger("tunegraph.api.composition")


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


def workspace(settings: Settings) -> Workspace:
    """Where training reads the demo corpus and writes runs, adapters and vision models."""
    from finetune.workspace import Workspace

    return Workspace(
        demo_dir=settings.demo_dir,
        runs_dir=settings.runs_dir,
        adapters_dir=settings.adapters_dir,
        vision_dir=settings.vision_dir,
        models=model_store(settings),
        passage_index=lambda blocks: passage_search(settings, blocks),
        index_blocks=lambda namespace: index_blocks(settings, namespace),
        teacher=lambda url, model: teacher(settings, url, model),
        tool_index=lambda blocks: tool_index(settings, blocks),
    )


def teacher(settings: Settings, url: str, model: str) -> Callable[[str], str]:
    """Asks the model ``model`` of the OpenAI-compatible endpoint ``url`` one prompt (greedy,
    TUNEGRAPH_LLM_API_KEY as its key): the teacher that writes training questions."""
    from agents.backends.openai_compat import OpenAICompatibleBackend
    from agents.chat_model import LocalChatModel

    backend = OpenAICompatibleBackend(
        url, model, api_key=settings.llm_api_key or None, timeout_s=settings.generation_timeout_s
    )
    llm = LocalChatModel(backend=backend, max_tokens=512)
    return lambda prompt: str(llm.invoke(prompt).content)


def passage_search(settings: Settings, blocks: Sequence[ManualBlock]) -> Search:
    """Hybrid search, as serving does it, over exactly ``blocks`` (a throwaway index): the
    passages RAFT training examples put before their questions."""
    from rag.indexing import passage_search

    return passage_search(embedder(settings), blocks)


def tool_index(settings: Settings, blocks: Sequence[ManualBlock]) -> ToolRunner:
    """The service-chat agent's tools, as serving runs them, over exactly ``blocks`` (a
    throwaway index): what tool-use training examples show as each call's result."""
    from agents.tools import tool_runner
    from rag.indexing import blocks_retriever

    return tool_runner(blocks_retriever(embedder(settings), blocks))


def index_blocks(settings: Settings, namespace: str) -> list[ManualBlock]:
    """The manual blocks of an ingested namespace (their section paths are not in the index)."""
    from rag.indexing import check_namespace, stored_blocks

    model = embedder(settings)
    return stored_blocks(vector_store(settings, check_namespace(namespace), model.dim))


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


def retriever(settings: Settings, namespace: str, embedder: Embedder) -> Retriever:
    """Hybrid retrieval over one namespace of the configured vector store."""
    from rag.retrieval import Retriever

    return Retriever(embedder, vector_store(settings, namespace, embedder.dim))


def text_adapter_dir(settings: Settings) -> Path | None:
    """The served fine-tuned text adapter's folder, or None when it has not been trained."""
    directory = settings.adapters_dir / settings.text_adapter
    return directory if (directory / "adapter_config.json").exists() else None


def served_text_model(settings: Settings) -> tuple[str, dict[str, Path]]:
    """The text model the API runs in process and its adapters (name -> folder): the trained
    fine-tuned adapter on the base its manifest names, or the configured text model alone."""
    from finetune.evaluation import text_base

    adapter_dir = text_adapter_dir(settings)
    if adapter_dir is None:
        return settings.text_model, {}
    return text_base(adapter_dir, settings.text_model), {settings.text_adapter: adapter_dir}


def engine_cache_dir(settings: Settings) -> Path:
    """Where the engine's builds of the text model and its adapters are cached."""
    return settings.models_dir / "onnx"


def vision_engine_cache(settings: Settings) -> Path | None:
    """Where the vision-language model's decoder is built for the engine; None when
    ``settings.engine`` is transformers (its decoder then runs on torch)."""
    return None if settings.engine == "transformers" else engine_cache_dir(settings)


def damage_model_dir(settings: Settings) -> Path | None:
    """The trained damage model's folder (``tunegraph finetune vision``), or None."""
    directory = settings.vision_dir / DAMAGE_MODEL
    return directory if directory.is_dir() and any(directory.iterdir()) else None


def vision_lm_dir(settings: Settings) -> Path | None:
    """The trained vision-language model's folder (``configs/vision/vlm_quick.yaml``), or None."""
    from finetune.vision_lm import CONFIG_FILE

    directory = settings.vision_dir / VISION_LM
    return directory if (directory / CONFIG_FILE).is_file() else None


def trained_models(settings: Settings) -> TrainedModels:
    """The folders of the trained vision-language model, damage model and text adapter."""
    from agents.compare import TrainedModels

    return TrainedModels(
        vision_lm=vision_lm_dir(settings),
        damage_model=damage_model_dir(settings),
        text_adapter=text_adapter_dir(settings),
    )


def compute_billing(
    settings: Settings,
    cpu_per_hour: float | None = None,
    gpu_per_hour: float | None = None,
    *,
    prices_file: bool = False,
) -> dict[str, Any]:
    """The comparison's compute-billing options: the hourly prices given; else, unless a prices
    file was given (which then decides), the settings'; None leaves the price table's. And the
    hardware the self-hosted models run on (None for ``TUNEGRAPH_DEVICE=auto``: detected)."""
    fallback = (None, None) if prices_file else (settings.cpu_per_hour, settings.gpu_per_hour)
    return {
        "cpu_per_hour": fallback[0] if cpu_per_hour is None else cpu_per_hour,
        "gpu_per_hour": fallback[1] if gpu_per_hour is None else gpu_per_hour,
        "hardware": {"cpu": "cpu", "cuda": "gpu"}.get(settings.device),
    }


def agent_context(settings: Settings) -> AgentContext:
    """Everything the graphs need, loaded from settings (slow: loads the models).

    The chat model is the configured text model with the fine-tuned adapter when one exists
    (its manifest names the base it was trained on). A damage model or vision-language model
    that was never trained is left out, and a retriever whose index is empty counts as missing
    until something is ingested (:meth:`AgentContext.available`): each graph says what it
    misses.
    """
    from agents.chat_model import LocalChatModel
    from agents.context import AgentContext
    from finetune.tool_data import trained_for_tools

    base, adapters = served_text_model(settings)
    store = model_store(settings)
    finetuned = settings.text_adapter if adapters else None
    if settings.llm_base_url:
        from agents.backends.openai_compat import OpenAICompatibleBackend

        # the server runs the model and serves the adapter under the text_adapter name
        finetuned = settings.text_adapter
        backend: Any = OpenAICompatibleBackend(
            settings.llm_base_url,
            settings.llm_model or settings.text_model,
            api_key=settings.llm_api_key or None,
            adapters={finetuned: finetuned},
            timeout_s=settings.generation_timeout_s,
        )
    else:
        backend = local_backend(settings, store, base, adapters)
    llm = LocalChatModel(backend=backend)

    shared_embedder = embedder(settings)
    manuals, claims_index = (
        retriever(settings, namespace, shared_embedder) for namespace in (MANUALS, CLAIMS)
    )
    damage_dir = damage_model_dir(settings)
    damage_model = None
    if damage_dir is not None:
        from finetune.vision_models import DamageDetector

        damage_model = DamageDetector.load(damage_dir)
    vision = None
    if (vlm_dir := vision_lm_dir(settings)) is not None:
        from finetune.vision_lm import VisionLM, VisionLMAssessor

        vision = VisionLMAssessor(
            VisionLM.load(vlm_dir, store.load_causal_lm, engine_cache=vision_engine_cache(settings))
        )
    return AgentContext(
        llm=llm,
        finetuned_adapter=finetuned,
        manuals=manuals,
        claims_db=claims_database(settings),
        claims_index=claims_index,
        damage_model=damage_model,
        vision=vision,
        open_photo=lambda path: _photo_bytes(settings, path),
        min_support=settings.min_support,
        tool_adapter=bool(adapters) and trained_for_tools(adapters[settings.text_adapter]),
    )


def local_backend(
    settings: Settings, store: ModelStore, base: str, adapters: dict[str, Path]
) -> Backend:
    """The in-process backend of text model ``base`` with ``adapters`` for ``settings.engine``:
    ONNX Runtime GenAI (built once into the model cache, runs on CPU) or transformers. ``auto``
    takes the engine on CPU when it is installed and the model and adapters build for it,
    otherwise transformers: on a CUDA device silently, else with one warning saying why."""
    if settings.engine == "onnx" or (settings.engine == "auto" and store.device == "cpu"):
        from agents.backends.onnx_genai import OnnxGenAIBackend
        from finetune.onnx_build import EngineUnavailable

        try:
            source = store.checkpoint_dir(base)
            if source is None:
                raise EngineUnavailable(
                    f"{base!r} is not a local checkpoint folder (a hub id or a .gguf file)"
                )
            return OnnxGenAIBackend.from_checkpoint(
                source,
                base,
                engine_cache_dir(settings),
                adapters,
                log=log.info,
                max_batch=settings.max_batch_size,
            )
        except EngineUnavailable as exc:
            if settings.engine == "onnx":
                raise EngineUnavailable(f"{env_name('engine')}=onnx: {exc}") from None
            log.warning("%s=auto: %s; the text model runs on transformers", env_name("engine"), exc)
    from agents.backends.transformers import TransformersBackend

    model, tokenizer = store.load_causal_lm(base)
    return TransformersBackend(model, tokenizer, base, adapters)


def text_answerer(settings: Settings, store: ModelStore, adapter: str) -> Answerer | None:
    """What ``eval text`` answers with: the serving backend (the engine, per
    ``settings.engine``) on ``adapter``'s base with the adapter loaded, its questions sent
    ``max_batch_size`` at a time so the engine batches them; None when the text model would run
    on transformers (the evaluation then batches transformers ``generate`` itself)."""
    from agents.backends.answerer import backend_answerer
    from agents.backends.transformers import TransformersBackend
    from finetune.evaluation import text_base

    adapter_dir = settings.adapters_dir / adapter
    tuned = (adapter_dir / "adapter_config.json").exists()
    if settings.engine == "transformers" or (settings.engine == "auto" and store.device != "cpu"):
        return None
    base = text_base(adapter_dir, settings.text_model)
    backend = local_backend(settings, store, base, {adapter: adapter_dir} if tuned else {})
    if isinstance(backend, TransformersBackend):
        return None  # the engine could not take the model: the warning said why

    return backend_answerer(backend, settings.max_batch_size)


def _photo_bytes(settings: Settings, path: str) -> bytes:
    # Claims files store photo paths relative to the corpus they came with (the demo's root).
    photo = Path(path)
    return (photo if photo.is_absolute() else settings.demo_dir / photo).read_bytes()
