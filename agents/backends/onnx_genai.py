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

Concurrent requests are decoded together (:mod:`agents.backends.batching`): up to
``max_batch`` requests with the same adapter share each forward pass, in one engine generator
whose prompts are right-padded (the engine then reads each row's logits at its own last prompt
token and writes each row's cache at its own length, so every row's answer is the one it gets
alone); the chosen tokens go back in as logits that allow only them. On this CPU a pass for
four rows costs little more than a pass for one: the weights are read once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.backends.base import (
    ChatRequest,
    Event,
)
from agents.backends.batching import Batcher, Row
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
        max_batch: int = 4,
    ) -> None:
        """``adapters``: name -> (adapter file, the tokenizer its prompts use); ``max_batch``:
        requests decoded together (1: one at a time)."""
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
        self.max_batch = max_batch
        self._batcher = Batcher(_Engine(self), max_batch, window, name=f"batcher {name}")

    @classmethod
    def from_checkpoint(
        cls,
        source: Path,
        name: str,
        cache_dir: Path,
        adapters: Mapping[str, Path] | None = None,
        precision: str = "fp32",
        log: Log = logger.info,
        max_batch: int = 4,
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
            adapter_file = build_adapter(path, build, cache_dir, log).path
            loaded[adapter_name] = (adapter_file, adapter_tokenizer)
        config = AutoConfig.from_pretrained(str(source), local_files_only=True)
        generation = _generation_config(source)
        window = context_window(SimpleNamespace(config=config), tokenizer)
        eos = eos_ids(SimpleNamespace(generation_config=generation), tokenizer)
        return cls(build, tokenizer, name, loaded, window, eos, max_batch)

    def _admission(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # the batcher admits and orders the requests

    def _generate(self, request: ChatRequest, prompt: list[int]) -> Iterator[Event]:
        import torch

        check_deadline(request)
        row = Row(prompt, request.max_tokens, request.adapter, request.deadline, min(self._eos))
        try:
            first = torch.from_numpy(self._batcher.join(row))
            yield from self._decode(
                request, prompt, first, lambda token: torch.from_numpy(row.step(token))
            )
        finally:
            row.leave()


class _Engine:
    """The engine's side of the batcher: one ``og.Generator`` per batch, right-padded."""

    def __init__(self, backend: OnnxGenAIBackend) -> None:
        self.backend = backend
        # the engine masks trailing pad tokens out (a prompt ends with the assistant's header)
        config = json.loads((backend.build.path / "genai_config.json").read_text("utf-8"))
        self.pad = config["model"]["pad_token_id"]

    def start(self, rows: list[Row], check: Callable[[], None]) -> tuple[_Batch, Any]:
        import numpy as np
        import onnxruntime_genai as og

        backend = self.backend
        width = max(len(row.prompt) for row in rows)
        params = og.GeneratorParams(backend.model)
        params.set_search_options(
            max_length=width + max(row.budget for row in rows), batch_size=len(rows)
        )
        generator = og.Generator(backend.model, params)
        if rows[0].adapter is not None:
            generator.set_active_adapter(backend._adapters, rows[0].adapter)
        if len(rows) == 1:  # the engine takes one row's prompt in chunks, a batch's in one
            prompt = rows[0].prompt
            for start in range(0, len(prompt), PREFILL_CHUNK):
                check()
                generator.append_tokens(prompt[start : start + PREFILL_CHUNK])
        else:
            padded = [row.prompt + [self.pad] * (width - len(row.prompt)) for row in rows]
            generator.append_tokens(np.array(padded, dtype=np.int32))
        logits = generator.get_logits()[:, -1]
        return _Batch(generator, logits.shape[-1]), logits


class _Batch:
    def __init__(self, generator: Any, vocab: int) -> None:
        self.generator, self.vocab = generator, vocab

    def advance(self, tokens: list[int]) -> Any:
        """The engine's greedy step on logits that allow only each row's chosen token."""
        import numpy as np

        chosen = np.full((len(tokens), 1, self.vocab), -np.inf, dtype=np.float32)
        chosen[np.arange(len(tokens)), 0, tokens] = 0.0
        self.generator.set_logits(chosen)
        self.generator.generate_next_token()
        return self.generator.get_logits()[:, -1]


def _generation_config(source: Path) -> SimpleNamespace | None:
    """The checkpoint's generation config (its end-of-turn ids), without loading the model."""
    path = source / "generation_config.json"
    if not path.is_file():
        return None
    return SimpleNamespace(**json.loads(path.read_text("utf-8")))
