from __future__ import annotations

import dataclasses

import pytest
import torch

from finetune.export import merge_adapter
from finetune.model_store import ModelNotFoundError, ModelStore, ModelStoreConfig
from finetune.recipes.text_lora import run
from tests.finetune.test_text_lora import EXAMPLES, _config, tiny_model

pytestmark = pytest.mark.real_model


def test_merged_model_gives_the_adapters_outputs(model_store, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    base_dir = tmp_path / "tiny-base"
    tiny_model(tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    store = ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters", device="cpu"))
    config = dataclasses.replace(_config(epochs=1), base_model=str(base_dir))
    base, _ = store.load_causal_lm(str(base_dir))
    result = run(config, base, tokenizer, EXAMPLES, EXAMPLES[:2], tmp_path / "run", data_hash="h")

    merged_dir = merge_adapter(store, result.adapter_dir, tmp_path / "merged")
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


def test_exporting_something_that_is_no_adapter_is_a_clear_error(tmp_path):
    store = ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters"))
    with pytest.raises(ModelNotFoundError, match="is not a tunegraph adapter"):
        merge_adapter(store, tmp_path, tmp_path / "out")
