"""QLoRA: the base's linear layers loaded through bitsandbytes (NF4, int8) on this CPU, LoRA
trained on top by the recipes, the adapter loaded and merged on the full-precision base."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from finetune.config import ConfigError, load_config
from finetune.export import merge_adapter
from finetune.model_store import ModelStore, ModelStoreConfig
from finetune.quantization import QuantizationError, load_kwargs
from finetune.recipes.text_lora import TextRecipeConfig, run
from finetune.recipes.vision_lm_config import VisionLMConfig
from finetune.trainer import TrainArgs, TrainingError
from tests.finetune.test_image_classifier import damage_data, tiny_corpus  # noqa: F401
from tests.finetune.test_text_lora import EXAMPLES, tiny_llama_config
from tests.finetune.test_vision_lm import STAGES, encoder_dir, save_tiny_llava  # noqa: F401

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LAYERS = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# 64 wide: bitsandbytes' CPU kernel for a 4-bit layer in eval mode repacks its weight in blocks
# of 64 inputs and 32 outputs, so the 32-wide test models elsewhere cannot run quantised
WIDE = {"hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 256}


def _quantised_layers(model) -> dict[str, str]:
    return {
        name.split(".")[-1]: type(module).__name__
        for name, module in model.named_modules()
        if name.split(".")[-1] in (*TARGETS, "lm_head")
    }


# ---- loading, on a tiny Llama without a tokenizer -------------------------------------------


@pytest.fixture(scope="module")
def small_vocab_llama(tmp_path_factory):
    """A checkpoint whose linear layers outweigh its embeddings (vocabulary 256), as in real
    models, so that the footprints compare what quantisation changes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        **WIDE,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_the_base_loads_with_bitsandbytes_layers_and_a_smaller_footprint_than_bf16(
    small_vocab_llama, quantization
):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    quantised = AutoModelForCausalLM.from_pretrained(
        small_vocab_llama, **load_kwargs(quantization, "cpu")
    )
    layers = _quantised_layers(quantised)
    assert {layers[t] for t in TARGETS} == {LAYERS[quantization]}
    assert layers["lm_head"] == "Linear"  # the head stays full precision, as in QLoRA
    bf16 = AutoModelForCausalLM.from_pretrained(small_vocab_llama, dtype=torch.bfloat16)
    fp32 = AutoModelForCausalLM.from_pretrained(small_vocab_llama)
    # embeddings and norms stay float32 (prepare_for_training would upcast them anyway)
    assert quantised.get_memory_footprint() < bf16.get_memory_footprint()
    assert bf16.get_memory_footprint() < fp32.get_memory_footprint()


def test_an_evaluation_leaves_the_4bit_layers_trainable(small_vocab_llama):
    """bitsandbytes repacks a 4-bit weight for its CPU inference kernel (no backward) the first
    time it runs in eval mode; prepare_for_training keeps it from doing so, or the steps after an
    evaluation would get other gradients than the steps before it."""
    pytest.importorskip("bitsandbytes")
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.quantization import prepare_for_training
    from finetune.trainer import LoraArgs

    model = AutoModelForCausalLM.from_pretrained(small_vocab_llama, **load_kwargs("nf4", "cpu"))
    model = get_peft_model(prepare_for_training(model), LoraArgs().peft_config(lora_dropout=0.0))
    torch.manual_seed(0)
    for name, param in model.named_parameters():  # LoRA B starts at zero: no gradient to A
        if "lora_B" in name:
            param.data.normal_(std=0.1)
    ids = torch.randint(0, 256, (2, 24))

    def gradients() -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = gradients()
    first_layer = [n for n in before if ".layers.0." in n]
    assert first_layer and all(before[n].abs().sum() > 0 for n in first_layer)
    assert all(torch.allclose(before[n], after[n], atol=1e-5) for n in before)


# ---- the text recipe, on a tiny Llama with SmolLM2's tokenizer --------------------------------


@pytest.fixture(scope="module")
def tokenizer(model_store):
    return model_store.load_causal_lm("smollm2-135m-instruct")[1]


@pytest.fixture(scope="module")
def tiny_base(tokenizer, tmp_path_factory):
    """A tiny Llama with SmolLM2's vocabulary and chat template, saved as a local base model."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base")
    LlamaForCausalLM(tiny_llama_config(tokenizer, **WIDE)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _config(base, quantization: str, **train) -> TextRecipeConfig:
    defaults = {"batch_size": 4, "epochs": 2, "log_every": 1, "save_every": 100, "lr": 1e-2}
    return TextRecipeConfig(
        base_model=str(base),
        train=TrainArgs(**{**defaults, "quantization": quantization, **train}),
    )


def _step_losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


@pytest.mark.real_model
@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_qlora_trains_and_the_adapter_loads_and_merges_on_the_full_precision_base(
    model_store, tokenizer, tiny_base, quantization, tmp_path
):
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.recipes.text_lora import encode

    model, _ = model_store.load_causal_lm(str(tiny_base), quantization)
    adapter_dir = tmp_path / "adapter"
    result = run(
        _config(tiny_base, quantization),
        model,
        tokenizer,
        EXAMPLES,
        EXAMPLES[:2],
        tmp_path / "run",
        data_hash="x",
        adapter_dir=adapter_dir,
    )
    losses = _step_losses(tmp_path / "run")
    assert len(losses) == result.steps == 6 and losses[-1] < losses[0] - 0.5
    # LoRA wraps the bitsandbytes layers in place; the base weights stayed quantised and frozen
    assert type(model.model.layers[0].mlp.up_proj.base_layer).__name__ == LAYERS[quantization]
    manifest = json.loads((adapter_dir / "tunegraph-manifest.json").read_text())
    assert manifest["config"]["train"]["quantization"] == quantization

    ids = encode(EXAMPLES[0], tokenizer)[0]
    trained = _logits(model.eval(), ids)
    full, _ = model_store.load_causal_lm(str(tiny_base))
    base_logits = _logits(full, ids)
    reloaded = PeftModel.from_pretrained(full, str(adapter_dir)).eval()
    on_full = _logits(reloaded, ids)
    # What LoRA learned carries over: on the full-precision base the adapter gives the logits
    # the quantised model trained to, up to the quantisation error, which stays under 15 % of
    # how far training moved them (measured here: nf4 5 %, int8 1 %).
    learned = (on_full - base_logits).abs().max()
    assert learned > 0.5
    assert (on_full - trained).abs().max() < 0.15 * learned

    merge_adapter(model_store, adapter_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert getattr(merged.config, "quantization_config", None) is None
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert torch.allclose(_logits(merged, ids), on_full, atol=1e-4)


@pytest.mark.real_model
def test_a_qlora_run_resumes_exactly(model_store, tokenizer, tiny_base, tmp_path):
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    def train(out, **kwargs):
        model, _ = model_store.load_causal_lm(str(tiny_base), "nf4")
        config = _config(tiny_base, "nf4")
        return run(config, model, tokenizer, EXAMPLES, EXAMPLES[:2], out, data_hash="x", **kwargs)

    straight = train(tmp_path / "a")
    assert train(tmp_path / "b", stop_after_steps=4).metrics == {"stopped_early": True}
    resumed = train(tmp_path / "b")
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.real_model
def test_the_recipe_refuses_a_base_loaded_otherwise_than_its_config_says(
    model_store, tokenizer, tiny_base, tmp_path
):
    model, _ = model_store.load_causal_lm(str(tiny_base))
    with pytest.raises(TrainingError, match=r"loaded with quantization=none; load it with"):
        run(_config(tiny_base, "nf4"), model, tokenizer, EXAMPLES, [], tmp_path, data_hash="x")


@pytest.mark.real_model
def test_smollm2_trains_with_qlora_from_the_model_stores_cached_checkpoint(model_store, tmp_path):
    """The embedded GGUF is converted to safetensors in the cache; the 4-bit load reads that
    folder, and a few QLoRA steps on one batch lower its loss."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    model, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct", "nf4")
    info = model_store.resolve("smollm2-135m-instruct")
    assert info.source == "cache"
    assert set(_quantised_layers(model).values()) == {"Linear4bit", "Linear"}  # + the head
    bf16 = AutoModelForCausalLM.from_pretrained(info.location, dtype=torch.bfloat16)
    # float32 embeddings (28M of the 135M parameters) keep NF4 from a 4x saving
    assert model.get_memory_footprint() < 0.75 * bf16.get_memory_footprint()
    del bf16
    # one batch of two short examples, three times; LoRA in the last 4 of 30 layers keeps the
    # backward pass short (~1 min on the 2-core machine)
    config = TextRecipeConfig(
        train=TrainArgs(
            batch_size=2, epochs=3, lr=2e-3, log_every=1, save_every=100, quantization="nf4"
        )
    )
    config.lora.dropout, config.lora.last_layers = 0.0, 4
    result = run(config, model, tokenizer, EXAMPLES[:2], [], tmp_path, data_hash="x")
    losses = _step_losses(tmp_path)
    assert result.steps == 3 and losses[-1] < losses[0]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.real_model
def test_a_quantised_model_is_not_written_as_gguf(model_store, tokenizer, tiny_base, tmp_path):
    pytest.importorskip("bitsandbytes")
    from finetune.gguf_export import GGUFExportError, export_gguf

    model, _ = model_store.load_causal_lm(str(tiny_base), "nf4")
    with pytest.raises(GGUFExportError, match="loaded nf4: merge the adapter into the full-pre"):
        export_gguf(model, tokenizer, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


@pytest.mark.real_model
def test_the_shipped_llama_qlora_config_loads_its_base_in_4bit(model_store, tiny_base, tmp_path):
    """configs/text/llama31_8b_qlora.yaml with the tiny base in Llama 3.1's place: the recipe's
    entry point loads it through bitsandbytes and says so."""
    pytest.importorskip("bitsandbytes")
    from finetune.recipes.text_lora import main
    from tests.finetune.test_text_lora import demo_workspace

    config = load_config(
        TextRecipeConfig,
        CONFIGS / "text" / "llama31_8b_qlora.yaml",
        [f"base_model={tiny_base}", "train.epochs=1", "data.spec_paraphrases=2"],
    )
    lines: list[str] = []
    done = main(config, demo_workspace(tmp_path, model_store), log=lines.append)
    assert any(line.startswith("QLoRA: the base's linear layers loaded nf4") for line in lines)
    manifest = json.loads((done.result.adapter_dir / "tunegraph-manifest.json").read_text())
    assert manifest["config"]["train"]["quantization"] == "nf4" and done.result.steps == 1


# ---- the vision-language recipes -------------------------------------------------------------


@pytest.mark.real_model
def test_qlora_on_an_image_text_to_text_model(model_store, damage_data, tmp_path):  # noqa: F811
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from finetune.recipes import image_text_lora

    tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")[1]
    folder = save_tiny_llava(tokenizer, tmp_path / "llava", width=64)
    train, val = damage_data
    config = load_config(
        VisionLMConfig,
        None,
        [
            f"hf_model={folder}",
            "train.quantization=nf4",
            "train.max_steps=3",
            "train.batch_size=2",
            "train.lr=0.01",
            "train.log_every=1",
            "lora.r=4",
        ],
    )
    result = image_text_lora.run(config, train[:6], val[:2], tmp_path / "run", data_hash="h")
    losses = _step_losses(tmp_path / "run")
    assert result.steps == 3 and all(loss == loss for loss in losses)
    manifest = json.loads((result.model_dir / "tunegraph-manifest.json").read_text())
    assert manifest["config"]["train"]["quantization"] == "nf4"
    # the adapter loads on the full-precision model (what ImageTextToTextLM.load does)
    base = AutoModelForImageTextToText.from_pretrained(folder)
    tuned = PeftModel.from_pretrained(base, result.model_dir / "adapter")
    assert any("lora_A" in name for name, _ in tuned.named_parameters())
    assert {p.dtype for p in tuned.parameters()} == {torch.float32}


@pytest.mark.real_model
def test_the_composed_vlm_trains_on_a_4bit_decoder_and_loads_on_the_full_one(
    model_store,
    tiny_base,
    encoder_dir,  # noqa: F811
    damage_data,  # noqa: F811
    tmp_path,
):
    pytest.importorskip("bitsandbytes")
    from finetune.recipes.vision_lm import run as run_vlm
    from finetune.vision_lm import VisionLM

    train, val = damage_data
    decoder, tokenizer = model_store.load_causal_lm(str(tiny_base), "nf4")
    config = load_config(
        VisionLMConfig,
        None,
        [*STAGES, f"base_model={tiny_base}", "train.quantization=nf4", "train.epochs=1"],
    )
    result = run_vlm(config, decoder, tokenizer, encoder_dir, train, val, tmp_path, data_hash="d")
    assert result.metrics["eval_loss"] == result.metrics["eval_loss"]  # finite, not nan
    model = VisionLM.load(result.model_dir, model_store.load_causal_lm)
    assert type(model.vlm.causal_lm.model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear"
    (answer,) = model.answer([train[0][0]], max_new_tokens=600)
    assert answer.complete, answer.text
    with pytest.raises(TrainingError, match=r"align\.quantization=nf4: both stages"):
        bad = load_config(VisionLMConfig, None, [*STAGES, "align.quantization=nf4"])
        run_vlm(bad, decoder, tokenizer, encoder_dir, train, val, tmp_path / "x", data_hash="d")


# ---- when bitsandbytes is missing or cannot run --------------------------------------------


def test_a_missing_bitsandbytes_names_the_extra_and_the_setting(small_vocab_llama, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import` sees when absent
    store = ModelStore(ModelStoreConfig(small_vocab_llama / "m", small_vocab_llama / "a"))
    with pytest.raises(
        QuantizationError,
        match=r"train\.quantization=nf4 .* not installed: pip install 'tunegraph\[qlora\]', or "
        r"set train\.quantization=none",
    ):
        store.load_causal_lm(str(small_vocab_llama), "nf4")


def test_a_device_bitsandbytes_cannot_quantise_on_says_so(monkeypatch):
    bitsandbytes = pytest.importorskip("bitsandbytes")

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no kernel for bitsandbytes::int8_vectorwise_quant on cpu")

    monkeypatch.setattr(bitsandbytes.functional, "int8_vectorwise_quant", no_kernel)
    with pytest.raises(
        QuantizationError,
        match=r"train\.quantization=int8: bitsandbytes .* cannot quantise on this CPU \(no kernel",
    ):
        load_kwargs("int8", "cpu")
    with pytest.raises(QuantizationError, match=r"train\.quantization='fp8': use one of none, nf4"):
        load_kwargs("fp8", "cpu")
    with pytest.raises(ConfigError, match="use one of none, nf4, int8"):
        load_config(TextRecipeConfig, None, ["train.quantization=fp8"])


@pytest.mark.real_model
def test_a_gguf_file_cannot_load_quantised(model_store):
    from finetune.model_store import EMBEDDED, _shipped_file

    gguf = _shipped_file(EMBEDDED["smollm2-135m-instruct"])
    with pytest.raises(QuantizationError, match="single GGUF file, which bitsandbytes cannot"):
        model_store.load_causal_lm(str(gguf), "nf4")
