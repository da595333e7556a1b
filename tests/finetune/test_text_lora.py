from __future__ import annotations

import json

import pytest
import torch

from finetune.datasets import example
from finetune.recipes.text_lora import (
    IGNORE,
    TextRecipeConfig,
    TrainArgs,
    TrainingError,
    batches,
    encode,
    run,
)

pytestmark = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template


@pytest.fixture(scope="module")
def tokenizer(model_store):
    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    return tokenizer


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer Llama with random weights and SmolLM2's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


EXAMPLES = [example("SPEC", f"What is torque {i}?", f"{10 + i} Nm", f"b{i}") for i in range(12)]


def _config(**train) -> TextRecipeConfig:
    defaults = {"batch_size": 4, "epochs": 2, "log_every": 1, "save_every": 100, "lr": 1e-3}
    return TextRecipeConfig(train=TrainArgs(**{**defaults, **train}))


def test_labels_cover_only_the_answer_and_its_end_of_turn(tokenizer):
    ids, labels = encode(EXAMPLES[3], tokenizer)
    assert len(ids) == len(labels)
    learned = [t for t in labels if t != IGNORE]
    assert tokenizer.decode(learned).startswith("13 Nm")
    assert tokenizer.eos_token_id in learned  # <|im_end|>: the model learns to stop
    assert labels[: len(ids) - len(learned)] == [IGNORE] * (len(ids) - len(learned))


def test_batches_are_deterministic_length_grouped_and_cover_everything():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    first = batches(lengths, 2, seed=1, epoch=0)
    assert first == batches(lengths, 2, seed=1, epoch=0)
    assert first != batches(lengths, 2, seed=1, epoch=1)
    assert sorted(i for b in first for i in b) == list(range(8))
    assert all(abs(lengths[b[0]] - lengths[b[-1]]) < 10 for b in first)


def test_training_lowers_loss_and_saves_adapter_with_manifest(tokenizer, tmp_path):
    result = run(
        _config(epochs=6),
        tiny_model(tokenizer),
        tokenizer,
        EXAMPLES[:8],
        EXAMPLES[8:],
        tmp_path,
        data_hash="abc",
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 6 and losses[-1] < losses[0]
    adapter = result.adapter_dir
    assert (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "chat_template.jinja").exists() or "chat_template" in (
        adapter / "tokenizer_config.json"
    ).read_text()
    manifest = json.loads((adapter / "tunegraph-manifest.json").read_text())
    assert manifest["base_model"] == "smollm2-135m-instruct" and manifest["data_sha256"] == "abc"
    assert (
        manifest["config"]["train"]["epochs"] == 6 and manifest["metrics"]["eval_loss"] == evals[-1]
    )


def test_resume_continues_exactly(tokenizer, tmp_path):
    def train(out, **kwargs):
        return run(
            _config(),
            tiny_model(tokenizer),
            tokenizer,
            EXAMPLES,
            EXAMPLES[:4],
            out,
            data_hash="x",
            **kwargs,
        )

    straight = train(tmp_path / "a")
    train(tmp_path / "b", stop_after_steps=4)
    resumed = train(tmp_path / "b")
    assert straight.steps == resumed.steps == 6
    from safetensors.torch import load_file

    a = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_nan_loss_stops_with_a_clear_message(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = float("nan")
    with pytest.raises(TrainingError, match=r"loss became nan at step 1; lower train\.lr"):
        run(_config(), model, tokenizer, EXAMPLES, EXAMPLES[:2], tmp_path, data_hash="x")


def test_qlora_needs_cuda(tokenizer, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainingError, match="needs a CUDA GPU"):
        run(
            _config(quantization="nf4"),
            tiny_model(tokenizer),
            tokenizer,
            EXAMPLES,
            [],
            tmp_path,
            data_hash="x",
        )
