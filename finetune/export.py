"""Merge a LoRA adapter into a full-precision copy of its base model and save safetensors.

The base is always loaded in full precision for the merge (the model store never quantizes), so
a QLoRA adapter is merged into float weights, never into 4-bit ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from finetune.gguf_export import OutType, export_gguf
from finetune.model_store import ModelNotFoundError, ModelStore

MANIFEST = "tunegraph-manifest.json"


def merge_adapter(
    store: ModelStore, adapter_dir: Path, out_dir: Path, *, gguf: OutType | None = None
) -> Path:
    """Write ``out_dir`` (model.safetensors, config, tokenizer with chat template, manifest),
    and with ``gguf`` (``f16`` or ``f32``) also ``out_dir/model-<gguf>.gguf`` for llama.cpp."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    manifest_file = adapter_dir / MANIFEST
    if not (adapter_dir / "adapter_config.json").exists() or not manifest_file.exists():
        raise ModelNotFoundError(
            f"{adapter_dir} is not a tunegraph adapter (no adapter_config.json and {MANIFEST}); "
            "`tunegraph models list` shows the adapters"
        )
    manifest = json.loads(manifest_file.read_text("utf-8"))
    model, _ = store.load_causal_lm(manifest["base_model"])
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if gguf:
            export_gguf(merged, tokenizer, tmp / f"model-{gguf}.gguf", outtype=gguf)
        (tmp / MANIFEST).write_text(
            json.dumps({**manifest, "kind": "merged", "merged_from": str(adapter_dir)}, indent=2)
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
