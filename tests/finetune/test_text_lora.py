from __future__ import annotations

import json

import pytest
import torch

from finetune.datasets import example
from finetune.recipes.text_lora import (
    IGNORE,
    TextRecipeConfig,
    collate,
    collate_packed,
    encode,
    example_weights,
    label_loss_sum,
    main,
    pack,
    run,
)
from finetune.trainer import TrainArgs, TrainingError, batches
from finetune.workspace import Workspace
from ingest.records import ManualBlock, QAPair

pytestmark = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template


@pytest.fixture(scope="module")
def tokenizer(model_store):
    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    return tokenizer


def tiny_llama_config(tokenizer, **extra):
    """A 2-layer, 32-wide Llama config with SmolLM2's vocabulary and end of turn; ``extra``
    adds or overrides settings."""
    from transformers import LlamaConfig

    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
    }
    return LlamaConfig(**{**settings, **extra})


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer Llama with random weights and SmolLM2's vocabulary."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, max_position_embeddings=256))


def save_tiny_model(tokenizer, directory):
    """:func:`tiny_model` and the tokenizer saved as a local model folder (a ``base_model``)."""
    tiny_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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


def test_loss_at_label_positions_equals_the_full_logits_loss(tokenizer):
    model = tiny_model(tokenizer).eval()
    input_ids, attention, labels = collate(
        [encode(e, tokenizer) for e in EXAMPLES[:3]], tokenizer.eos_token_id
    )
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    full = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    fast = label_loss_sum(model, input_ids, attention, labels)
    assert torch.allclose(fast, full, rtol=1e-5)
    assert int((labels != IGNORE).sum()) < labels.numel() / 2  # the shortcut skips most rows


def test_batches_are_deterministic_per_epoch_and_cover_everything():
    first = batches(10, 4, seed=1, epoch=0)
    assert first == batches(10, 4, seed=1, epoch=0)
    assert first != batches(10, 4, seed=1, epoch=1)
    assert sorted(i for b in first for i in b) == list(range(10))
    assert [len(b) for b in first] == [4, 4, 2]


def test_packing_fills_rows_and_keeps_examples_apart(tokenizer):
    assert pack([5, 50, 6, 51, 7], 64) == [[3, 4, 2], [1, 0]]
    model = tiny_model(tokenizer).eval()
    items = [encode(e, tokenizer) for e in EXAMPLES[:5]]
    input_ids, positions, labels, tokens = collate_packed(items, 256, tokenizer.eos_token_id)
    assert input_ids.shape[0] == 1 and tokens == sum(len(ids) for ids, _ in items)
    packed = label_loss_sum(model, input_ids, None, labels, position_ids=positions)
    alone = sum(
        label_loss_sum(model, torch.tensor([ids]), None, torch.tensor([labs]))
        for ids, labs in items
    )
    # Equal losses: no example attends to another one in its row ...
    assert torch.allclose(packed, alone, rtol=1e-6)
    # ... which this check would notice: one running position lets them see each other.
    running = torch.arange(input_ids.shape[1]).unsqueeze(0)
    leaky = label_loss_sum(model, input_ids, None, labels, position_ids=running)
    assert not torch.allclose(leaky, alone, rtol=1e-5)


def test_example_weighting_makes_the_packed_loss_the_sum_of_per_answer_means(tokenizer):
    model = tiny_model(tokenizer).eval()
    long_answer = example("PROCEDURE", "How?", "Step one. " * 20, "p")
    items = [encode(e, tokenizer) for e in [*EXAMPLES[:3], long_answer]]
    input_ids, positions, labels, _ = collate_packed(items, 256, tokenizer.eos_token_id)
    weighted = label_loss_sum(
        model,
        input_ids,
        None,
        labels,
        position_ids=positions,
        weights=example_weights(positions, labels),
    )
    means = [
        label_loss_sum(model, torch.tensor([ids]), None, torch.tensor([labs]))
        / sum(1 for t in labs[1:] if t != IGNORE)
        for ids, labs in items
    ]
    assert torch.allclose(weighted, sum(means), rtol=1e-5)
    # per token, the long answer would dominate: the plain sum is not this
    plain = label_loss_sum(model, input_ids, None, labels, position_ids=positions)
    assert not torch.allclose(plain / len(items), weighted / len(items), rtol=1e-2)


def test_example_weighted_training_runs(tokenizer, tmp_path):
    config = _config(epochs=2)
    config.loss_weighting = "example"
    result = run(
        config,
        tiny_model(tokenizer),
        tokenizer,
        EXAMPLES[:8],
        EXAMPLES[8:],
        tmp_path,
        data_hash="x",
    )
    manifest = json.loads((result.adapter_dir / "tunegraph-manifest.json").read_text())
    assert manifest["config"]["loss_weighting"] == "example" and result.steps == 4


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
    # The resumed run's metrics read as one run: the same steps once each, the same losses.
    logs = [
        [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        for out in (tmp_path / "a", tmp_path / "b")
    ]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for x, y in zip(*logs, strict=True):
        assert x.get("loss", x.get("eval_loss")) == pytest.approx(
            y.get("loss", y.get("eval_loss")), abs=1e-5
        )


def test_later_epochs_start_at_the_first_trained_layer_with_the_same_result(tokenizer, tmp_path):
    from safetensors.torch import load_file

    def train(out, cache):
        config = _config(epochs=3)
        config.lora.last_layers = 1  # layer 0 is frozen
        config.cache_frozen_layers = cache
        model = tiny_model(tokenizer)
        calls = []
        model.model.layers[0].register_forward_hook(lambda *_: calls.append(1))
        result = run(config, model, tokenizer, EXAMPLES[:8], EXAMPLES[8:], out, data_hash="x")
        return load_file(str(result.adapter_dir / "adapter_model.safetensors")), len(calls)

    plain, plain_calls = train(tmp_path / "plain", cache=False)
    cached, cached_calls = train(tmp_path / "cached", cache=True)
    # 2 batches per epoch: epochs 2 and 3 skipped the frozen layer (eval passes still run it)
    assert plain_calls - cached_calls == 4
    assert plain.keys() == cached.keys()
    for key in plain:
        assert torch.allclose(plain[key], cached[key], atol=1e-6), key


def test_metrics_also_go_to_tensorboard_when_it_is_installed(tokenizer, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(
        _config(), tiny_model(tokenizer), tokenizer, EXAMPLES, EXAMPLES[:2], tmp_path, data_hash="x"
    )
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss", "eval_loss", "tokens_per_s"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval_loss")] == [3, 6]


def test_nan_loss_stops_with_a_clear_message(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = float("nan")
    with pytest.raises(TrainingError, match=r"loss became nan at step 1; lower train\.lr"):
        run(_config(), model, tokenizer, EXAMPLES, EXAMPLES[:2], tmp_path, data_hash="x")


class RecordingBar:
    """A tqdm stand-in that keeps what it was asked to show."""

    def __init__(self, bars: list, **kwargs):
        self.kwargs, self.n = kwargs, kwargs.get("initial", 0)
        bars.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix(self, **_):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _demo_dir(root):
    """A demo corpus with only what the text recipe reads: QA pairs and the manual's blocks."""
    qa = root / "manual" / "qa"
    qa.mkdir(parents=True)
    for split, count, ask in (("train", 6, "What is"), ("val", 3, "Give me")):
        pairs = [
            QAPair(f"{split}{i}", f"b{i}", "SPEC", split, f"{ask} torque {i}?", f"{10 + i} Nm")
            for i in range(count)
        ]
        (qa / f"{split}.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    blocks = [
        ManualBlock(f"b{i}", "m.pdf", 1, ("Specs",), "SPEC", f"Torque {i}: {10 + i} Nm")
        for i in range(3)
    ]
    (root / "manual" / "blocks.jsonl").write_text(
        "".join(json.dumps(b.to_dict()) + "\n" for b in blocks)
    )
    return root


def demo_workspace(root, model_store) -> Workspace:
    """A workspace under ``root`` with :func:`_demo_dir`'s corpus and ``model_store``."""
    return Workspace(
        demo_dir=_demo_dir(root / "demo"),
        runs_dir=root / "runs",
        adapters_dir=root / "adapters",
        vision_dir=root / "vision",
        models=model_store,
    )


def test_main_trains_on_the_assembled_data_and_saves_the_run(tokenizer, model_store, tmp_path):
    import hashlib

    workspace = demo_workspace(tmp_path, model_store)
    config = _config(epochs=1)
    config.base_model = str(save_tiny_model(tokenizer, tmp_path / "tiny"))
    config.name = "tiny-lora"
    config.data.spec_paraphrases = 2
    lines, bars = [], []

    result = main(
        config,
        workspace,
        progress=lambda **kwargs: RecordingBar(bars, **kwargs),
        log=lines.append,
    )

    summary = result.summary()
    assert list(summary)[:3] == ["adapter", "run_dir", "data"]
    assert {"steps", "train_loss", "eval_loss", "tokens_per_s", "val_examples"} <= set(summary)
    json.dumps(summary, default=str)  # what `tunegraph finetune text --json` prints
    adapter = tmp_path / "adapters" / "tiny-lora"
    assert summary["adapter"] == str(adapter) and summary["run_dir"] == str(
        tmp_path / "runs" / "tiny-lora"
    )
    # the data: 6 train questions plus 2 phrasings of each of the 3 spec rows, the 3 val questions
    data_dir = tmp_path / "runs" / "tiny-lora" / "data"
    train_lines = (data_dir / "train.jsonl").read_text().splitlines()
    assert summary["data"]["train"] == len(train_lines) == 12
    assert summary["data"]["added_after_balancing"] == 6
    assert summary["data"]["val"] == len((data_dir / "val.jsonl").read_text().splitlines()) == 3
    assert summary["steps"] == 3 and bars[0].n == 3  # 12 examples in batches of 4, one epoch
    # the adapter and a manifest that names the base model and the data it learned from
    assert (adapter / "adapter_model.safetensors").exists()
    manifest = json.loads((adapter / "tunegraph-manifest.json").read_text())
    assert manifest["base_model"] == config.base_model
    data_hash = hashlib.sha256((data_dir / "train.jsonl").read_bytes()).hexdigest()
    assert manifest["data_sha256"] == data_hash
    assert lines[0].startswith("data: 12 train / 3 val examples; train per kind {'SPEC': 12}")
    assert lines[0].endswith("0 too long, 0 rejected lines")
