"""Write a Llama-architecture transformers model (e.g. a merged adapter) as one GGUF file for
llama.cpp / Ollama, with the `gguf` package (no llama.cpp build needed).

What is written follows llama.cpp's own converter for Llama models: the architecture's
hyper-parameters, the BPE tokenizer (tokens, token types, merges, special ids, chat template),
and every tensor under its GGUF name, with the query/key projections permuted to llama.cpp's
rotary layout. Norms stay float32; matrices are float16 (``f16``) or float32 (``f32``). The file
is written under a temporary name and renamed, so a failed export never leaves a partial file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

OutType = Literal["f16", "f32"]
# llama.cpp picks its pre-tokenizer regex by this name; known vocabularies by size.
_PRE_TOKENIZERS = {49152: "smollm", 128256: "llama-bpe"}
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4


class GGUFExportError(ValueError):
    """The model cannot be written as GGUF; the message says why and what to do instead."""


def export_gguf(model: Any, tokenizer: Any, path: Path, *, outtype: OutType = "f16") -> Path:
    """Write ``model`` and ``tokenizer`` to ``path`` (a ``.gguf`` file)."""
    import gguf
    import numpy as np

    from finetune.quantization import quantization_of

    if quantization_of(model) != "none":  # its packed 4/8-bit tensors are no float matrices
        raise GGUFExportError(
            f"GGUF export needs full-precision weights, but this model was loaded "
            f"{quantization_of(model)}: merge the adapter into the full-precision base "
            "instead (`tunegraph models export ADAPTER --gguf f16`)"
        )
    config = model.config
    if config.model_type != "llama":
        raise GGUFExportError(
            f"GGUF export supports Llama-architecture models, not {config.model_type!r}; "
            "convert the exported safetensors folder with llama.cpp's convert_hf_to_gguf.py"
        )
    if outtype not in ("f16", "f32"):
        raise GGUFExportError(f"outtype={outtype!r}: use f16 or f32")
    n_head = config.num_attention_heads
    n_kv = config.num_key_value_heads or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        _write_hparams(writer, config, outtype)
        _write_tokenizer(writer, tokenizer, config)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for name, tensor in model.state_dict().items():
            if tied and name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd.weight
            target = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise GGUFExportError(f"no GGUF name for tensor {name!r}")
            data = tensor.detach().float().cpu().numpy()
            if name.endswith("q_proj.weight"):
                data = _permute(data, n_head, n_head)
            elif name.endswith("k_proj.weight"):
                data = _permute(data, n_head, n_kv)
            if data.ndim > 1 and outtype == "f16":
                data = data.astype(np.float16)
            writer.add_tensor(target, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """HF rotary layout (halves) -> llama.cpp's (interleaved pairs), as its converter does."""
    heads = n_head_kv if n_head_kv != n_head else n_head
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _write_hparams(writer: Any, config: Any, outtype: OutType) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(getattr(config, "_name_or_path", "") or "tunegraph-export")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if theta:
        writer.add_rope_freq_base(float(theta))
    if rope.get("rope_type", "default") not in ("default", None):
        raise GGUFExportError(
            f"rope_type={rope['rope_type']!r} is not written by tunegraph's GGUF export; "
            "convert the exported safetensors folder with llama.cpp's convert_hf_to_gguf.py"
        )
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    )


def _write_tokenizer(writer: Any, tokenizer: Any, config: Any) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GGUFExportError("GGUF export needs a fast (tokenizers) BPE tokenizer")
    spec = json.loads(backend.to_str())
    if spec["model"]["type"] != "BPE":
        raise GGUFExportError(
            f"GGUF export writes BPE tokenizers; this one is {spec['model']['type']}"
        )
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    special: set[int] = set()
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    size = max(config.vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [_USER_DEFINED] * size
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = _CONTROL if index in special else _NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_PRE_TOKENIZERS.get(len(vocab), "default"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            setter(token_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
