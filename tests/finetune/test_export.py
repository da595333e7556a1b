from __future__ import annotations

import dataclasses

import pytest
import torch

from finetune.export import merge_adapter
from finetune.gguf_export import GGUFExportError, export_gguf
from finetune.model_store import ModelNotFoundError, ModelStore, ModelStoreConfig
from finetune.recipes.text_lora import run
from tests.finetune.test_text_lora import EXAMPLES, _config, tiny_model

pytestmark = pytest.mark.real_model


def test_merged_model_gives_the_adapters_outputs(model_store, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    base_dir = tmp_path / "tiny-base"
    tiny_model(tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    store = ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters", device="cpu"))
    config = dataclasses.replace(_config(epochs=1), base_model=str(base_dir))
    base, _ = store.load_causal_lm(str(base_dir))
    result = run(config, base, tokenizer, EXAMPLES, EXAMPLES[:2], tmp_path / "run", data_hash="h")

    merged_dir = merge_adapter(store, result.adapter_dir, tmp_path / "merged", gguf="f32")
    assert (merged_dir / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not any("lora" in name for name in merged.state_dict())
    fresh_base, _ = store.load_causal_lm(str(base_dir))
    with_adapter = PeftModel.from_pretrained(fresh_base, str(result.adapter_dir)).eval()
    ids = torch.tensor([tokenizer("Wheel bolt torque")["input_ids"]])
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        got = merged.eval()(input_ids=ids).logits
        plain = (
            fresh_base.get_base_model()(input_ids=ids).logits
            if hasattr(fresh_base, "get_base_model")
            else None
        )
    assert torch.allclose(expected, got, atol=1e-4)
    assert plain is None or not torch.allclose(expected, plain, atol=1e-6)

    # The GGUF file alone holds the same weights: transformers' own GGUF reader gets the same
    # logits, and its tokenizer (vocabulary, merges, chat template) encodes like the original.
    alone = tmp_path / "gguf-only"
    alone.mkdir()
    (merged_dir / "model-f32.gguf").rename(alone / "model-f32.gguf")
    from_gguf = AutoModelForCausalLM.from_pretrained(alone, gguf_file="model-f32.gguf")
    with torch.no_grad():
        assert torch.allclose(from_gguf.eval()(input_ids=ids).logits, got, atol=1e-5)
    gguf_tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file="model-f32.gguf")
    text = "Tighten the M12 bolts to 110 Nm (81 lb-ft)."
    assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert gguf_tokenizer.chat_template == tokenizer.chat_template


def test_gguf_export_refuses_other_architectures_without_leaving_a_file(model_store, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(GGUFExportError, match=r"Llama-architecture.*convert_hf_to_gguf"):
        export_gguf(model, tokenizer, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_gguf_f16_export_halves_the_matrices(model_store, tmp_path):
    import gguf

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    export_gguf(tiny_model(tokenizer), tokenizer, tmp_path / "m.gguf", outtype="f16")
    tensors = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert tensors["blk.0.attn_q.weight"] == "F16"
    assert tensors["blk.0.attn_norm.weight"] == "F32"
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_exporting_something_that_is_no_adapter_is_a_clear_error(tmp_path):
    store = ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters"))
    with pytest.raises(ModelNotFoundError, match="is not a tunegraph adapter"):
        merge_adapter(store, tmp_path, tmp_path / "out")
