"""In-process generation with ONNX Runtime GenAI: one base model, several LoRA adapters.

The same contract as :class:`~agents.backends.transformers.TransformersBackend` (prompts from
the HF tokenizer's chat template, llguidance grammars for tool calls and JSON answers, stop
sequences, usage, deadlines, adapters per request), with the engine's graph running the
forward passes: ~10x faster decoding on CPU in fp32. The engine is used as a forward pass with
a KV cache (``append_tokens`` then ``get_logits``); picking the token stays here, so grammar
masking, the JSON closing steer and seeded sampling behave exactly as in the transformers
backend, and fp32 greedy answers are the same tokens. (The engine's own ``set_guidance`` accepts
the same Lark grammar, but it cannot steer an answer to close before ``max_tokens``.)

The model is built once from the checkpoint folder and cached (:mod:`finetune.onnx_build`);
with adapters it is built with LoRA slots and each adapter is exported to ONNX Runtime's
adapter format, all loaded beside one copy of the base weights.

Requests run one at a time per backend (a lock): on CPU concurrent decodes only split the
cores. Batching several requests into one forward pass is a later step.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.backends.base import (
    ChatRequest,
    Event,
)
from agents.backends.decoding import TokenDecoder, check_adapter, check_deadline, eos_ids
from agents.backends.transformers import PREFILL_CHUNK, context_window
from finetune.onnx_build import Log, OnnxBuild, build_adapter, build_model

logger = logging.getLogger(__name__)


class OnnxGenAIBackend(TokenDecoder):
    """A built model (:func:`finetune.onnx_build.build_model`) with named adapter files
    (:func:`finetune.onnx_build.build_adapter`); :meth:`from_checkpoint` makes both."""

    def __init__(
        self,
        build: OnnxBuild,
        tokenizer: Any,
        name: str,
        adapters: Mapping[str, tuple[Path, Any]] | None = None,
        window: int | None = None,
        eos_ids: set[int] | None = None,
    ) -> None:
        """``adapters``: name -> (adapter file, the tokenizer its prompts use)."""
        import onnxruntime_genai as og

        self.name = name
        self.build = build
        self.tokenizer = tokenizer
        self.context_window = window
        self._eos = eos_ids or {tokenizer.eos_token_id}
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._closing_tokens: Any = None
        self.model = og.Model(str(build.path))
        self._tokenizers: dict[str | None, Any] = {None: tokenizer}
        self._adapters = og.Adapters(self.model) if adapters else None
        for adapter_name, (path, adapter_tokenizer) in (adapters or {}).items():
            self._adapters.load(str(path), adapter_name)
            self._tokenizers[adapter_name] = adapter_tokenizer

    @classmethod
    def from_checkpoint(
        cls,
        source: Path,
        name: str,
        cache_dir: Path,
        adapters: Mapping[str, Path] | None = None,
        precision: str = "fp32",
        log: Log = logger.info,
    ) -> OnnxGenAIBackend:
        """Build (or find cached) the engine's model of the HF checkpoint folder ``source`` and
        its PEFT ``adapters`` (name -> folder) under ``cache_dir``, and load them.

        Raises :class:`finetune.onnx_build.EngineUnavailable` when the engine is missing or
        the model or an adapter cannot be built; :class:`GenerationError` for an adapter that
        is not one or was trained on another base."""
        from transformers import AutoConfig, AutoTokenizer

        folders = {adapter_name: Path(path) for adapter_name, path in (adapters or {}).items()}
        for adapter_name, path in folders.items():
            check_adapter(adapter_name, path, name)
        build = build_model(source, cache_dir, precision, lora=bool(folders), log=log)
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        loaded = {}
        for adapter_name, path in folders.items():
            own = (path / "tokenizer_config.json").exists()
            adapter_tokenizer = AutoTokenizer.from_pretrained(str(path)) if own else tokenizer
            loaded[adapter_name] = (build_adapter(path, build, cache_dir, log), adapter_tokenizer)
        config = AutoConfig.from_pretrained(str(source), local_files_only=True)
        generation = _generation_config(source)
        window = context_window(SimpleNamespace(config=config), tokenizer)
        eos = eos_ids(SimpleNamespace(generation_config=generation), tokenizer)
        return cls(build, tokenizer, name, loaded, window, eos)

    def _start(self, request: ChatRequest, prompt: list[int]) -> Any:
        """A generator of the engine that has read the prompt (in chunks, checking the
        deadline between them) with the request's adapter active."""
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt) + request.max_tokens)
        generator = og.Generator(self.model, params)
        if request.adapter is not None:
            generator.set_active_adapter(self._adapters, request.adapter)
        for start in range(0, len(prompt), PREFILL_CHUNK):
            check_deadline(request)
            generator.append_tokens(prompt[start : start + PREFILL_CHUNK])
        return generator

    def _generate(self, request: ChatRequest, prompt: list[int]) -> Iterator[Event]:
        import torch

        check_deadline(request)  # it may have passed while this request waited for the lock
        generator = self._start(request, prompt)

        def step(token: int) -> Any:
            generator.append_tokens([token])
            return torch.from_numpy(generator.get_logits()[0, -1])

        first = torch.from_numpy(generator.get_logits()[0, -1])
        yield from self._decode(request, prompt, first, step)


def _generation_config(source: Path) -> SimpleNamespace | None:
    """The checkpoint's generation config (its end-of-turn ids), without loading the model."""
    path = source / "generation_config.json"
    if not path.is_file():
        return None
    return SimpleNamespace(**json.loads(path.read_text("utf-8")))
