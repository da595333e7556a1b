"""Merge a LoRA adapter into a full-precision copy of its base model and save safetensors.

The base is always loaded in full precision for the merge (``load_causal_lm`` without
``quantization``), whatever the adapter was trained on: a QLoRA adapter (``train.quantization``
nf4 or int8) is merged into the float weights it approximates, never into 4-bit or 8-bit ones,
which would have to be rounded back to their grid and lose the update.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from finetune.artifact import MANIFEST_FILE, read_manifest, write_atomically
from finetune.gguf_export import OutType, export_gguf
from finetune.model_store import ModelNotFoundError, ModelStore


def merge_adapter(
    store: ModelStore, adapter_dir: Path, out_dir: Path, *, gguf: OutType | None = None
) -> Path:
    """Write ``out_dir`` (model.safetensors, config, tokenizer with chat template, manifest),
    and with ``gguf`` (``f16`` or ``f32``) also ``out_dir/model-<gguf>.gguf`` for llama.cpp."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    manifest = read_manifest(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists() or manifest is None:
        raise ModelNotFoundError(
            f"{adapter_dir} is not a tunegraph adapter (no adapter_config.json and "
            f"{MANIFEST_FILE}); `tunegraph models list` shows the adapters"
        )
    model, _ = store.load_causal_lm(manifest.base_model, quantization="none")
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))

    def write(directory: Path) -> None:
        merged.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        if gguf:
            export_gguf(merged, tokenizer, directory / f"model-{gguf}.gguf", outtype=gguf)
        merged_manifest = replace(
            manifest, kind="merged", extra={**manifest.extra, "merged_from": str(adapter_dir)}
        )
        merged_manifest.write(directory)

    write_atomically(out_dir, write)
    return out_dir
