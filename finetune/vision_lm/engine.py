"""The composed model's decoder on the ONNX engine: the same answers, several times faster on a
CPU than the decoder through ``transformers``.

ONNX Runtime GenAI's ``Generator`` cannot be fed embeddings step by step (its decoder-only state
always feeds ``input_ids``), so the engine's model builder makes the graph (a copy of the
decoder with its LoRA merged, taking ``inputs_embeds``, returning the last position's logits:
:func:`~finetune.onnx_build.build_embeds_decoder`) and an ``onnxruntime`` session runs it here;
:func:`~finetune.vision_lm.generation.generate` computes the embeddings (visual tokens and
token embeddings) and applies the grammar to the logits. The graph's attention op takes several
new tokens after a KV cache only one sequence at a time, so each photo is decoded on its own,
with the grammar's forced tokens appended in one pass.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finetune.onnx_build import EngineUnavailable, Log, build_embeds_decoder, engine_version

logger = logging.getLogger(__name__)


@dataclass
class KVCache:
    """One sequence's keys and values, in buffers the graph reads and writes in place."""

    binding: Any
    buffers: list[np.ndarray] = field(default_factory=list)
    length: int = 0


class EngineDecoder:
    """The graph of a build by :func:`~finetune.onnx_build.build_embeds_decoder` in an
    ``onnxruntime`` session, run one sequence at a time."""

    def __init__(self, build: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        self.session = ort.InferenceSession(
            str(build / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        decoder = json.loads((build / "genai_config.json").read_text("utf-8"))["model"]["decoder"]
        self.layers = [
            (decoder["inputs"]["past_key_names"] % i, decoder["outputs"]["present_key_names"] % i)
            for i in range(decoder["num_hidden_layers"])
        ] + [
            (
                decoder["inputs"]["past_value_names"] % i,
                decoder["outputs"]["present_value_names"] % i,
            )
            for i in range(decoder["num_hidden_layers"])
        ]
        self.kv_shape = (1, decoder["num_key_value_heads"], 0, decoder["head_size"])

    def start(self, capacity: int = 256) -> KVCache:
        """An empty cache with room for ``capacity`` tokens (it grows when they are not enough)."""
        cache = KVCache(self.session.io_binding())
        cache.binding.bind_output("logits")
        self._allocate(cache, capacity)
        return cache

    def forward(self, cache: KVCache, embeds: Any) -> Any:
        """Append ``embeds`` ([1, tokens, hidden]) to the sequence; the logits after its last
        token ([vocabulary], a float32 tensor)."""
        new = embeds.shape[1]
        if cache.length + new > cache.buffers[0].shape[2]:
            self._allocate(cache, 2 * (cache.length + new))
        cache.length += new
        binding = cache.binding
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds, dtype=np.float32))
        binding.bind_cpu_input("attention_mask", np.ones((1, cache.length), dtype=np.int64))
        self.session.run_with_iobinding(binding)
        return torch.from_numpy(binding.get_outputs()[0].numpy()[0, -1])

    def _allocate(self, cache: KVCache, capacity: int) -> None:
        """(Re)bind the cache's buffers at ``capacity`` tokens, keeping what they hold: the
        graph reads the past and writes the present into the same buffer (no copy per step)."""
        import onnxruntime as ort

        shape = list(self.kv_shape)
        shape[2] = capacity
        buffers = []
        for index, (past, present) in enumerate(self.layers):
            buffer = np.zeros(shape, dtype=np.float32)
            if cache.buffers:
                buffer[:, :, : cache.length] = cache.buffers[index][:, :, : cache.length]
            value = ort.OrtValue.ortvalue_from_numpy(buffer)
            cache.binding.bind_ortvalue_input(past, value)
            cache.binding.bind_ortvalue_output(present, value)
            buffers.append(buffer)
        cache.buffers = buffers


def engine_decoder(vlm: Any, cache_dir: Path, log: Log = logger.info) -> EngineDecoder | None:
    """The engine's build of ``vlm``'s decoder (LoRA merged; built now unless cached under
    ``cache_dir``), or None where the engine cannot run it: not installed, a decoder on a GPU
    (``transformers`` is the faster path there), or a build that fails (logged)."""
    if engine_version() is None:
        log("onnxruntime-genai is not installed: the vision-language model decodes with torch")
        return None
    if next(vlm.parameters()).device.type != "cpu":
        return None
    merged = copy.deepcopy(vlm.decoder).float()
    if hasattr(merged, "merge_and_unload"):  # a PEFT model: its LoRA goes into the weights
        merged = merged.merge_and_unload()
    try:
        build = build_embeds_decoder(merged, vlm.tokenizer, cache_dir, log)
        return EngineDecoder(build)
    except (EngineUnavailable, OSError) as exc:
        log(f"the vision-language model decodes with torch: its engine build failed: {exc}")
        return None
