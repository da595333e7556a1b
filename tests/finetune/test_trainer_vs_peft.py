"""The text recipe's training loop against a plain PEFT loop written out here.

The recipe packs each step's examples into rows, computes the vocabulary projection only at the
answer positions, weights the loss per token or per answer, and starts the second epoch from
cached hidden states (finetune/layer_cache.py). None of that may change what is learned: on the
same batches, a loop that pads, takes the full logits and averages the cross-entropy itself must
see the same loss at every step and end with the same adapter.
"""

from __future__ import annotations

import json

import pytest
import torch

from finetune.datasets import example
from finetune.recipes.text_lora import TextRecipeConfig, encode, run
from finetune.trainer import IGNORE, LoraArgs, TrainArgs, batches
from tests.finetune.test_text_lora import tiny_model

pytestmark = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template

# Answers of 3 to ~60 tokens: per token and per answer weigh them very differently.
EXAMPLES = [example("SPEC", f"What is torque {i}?", f"{10 + i} Nm", f"b{i}") for i in range(6)] + [
    example(
        "PROCEDURE",
        f"How do I do task {i}?",
        "Loosen the bolt, then turn it. " * (2 + 3 * i),
        f"p{i}",
    )
    for i in range(6)
]


@pytest.fixture(scope="module")
def tokenizer(model_store):
    _, tokenizer = model_store.load_causal_lm("smollm2-135m-instruct")
    return tokenizer


def _config(weighting: str) -> TextRecipeConfig:
    return TextRecipeConfig(
        loss_weighting=weighting,
        cache_frozen_layers=True,
        lora=LoraArgs(r=4, alpha=8, dropout=0.0, last_layers=1),  # layer 0 frozen: cached
        train=TrainArgs(
            epochs=2,
            batch_size=4,
            lr=1e-2,
            warmup_ratio=0.25,
            log_every=1,
            save_every=100,
            precision="fp32",
        ),
    )


def _plain_peft_loop(config: TextRecipeConfig, tokenizer, examples):
    """LoRA through PEFT, padded batches, full logits, AdamW with linear warm-up and decay;
    returns each step's loss and learning rate, and the trained LoRA weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    args, lora = config.train, config.lora
    model = tiny_model(tokenizer)
    torch.manual_seed(args.seed)  # the LoRA initialisation, as the recipe seeds it
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            layers_to_transform=[1],
            task_type="CAUSAL_LM",
        ),
    )
    data = [encode(e, tokenizer) for e in examples]
    steps = args.epochs * -(-len(data) // args.batch_size)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(steps * args.warmup_ratio), steps)
    losses, rates = [], []
    for epoch in range(args.epochs):
        for batch in batches(len(data), args.batch_size, args.seed, epoch):
            width = max(len(data[i][0]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.eos_token_id)
            labels = torch.full((len(batch), width), IGNORE)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(data[i][0])
                ids[row, :n], labels[row, :n], mask[row, :n] = (
                    torch.tensor(data[i][0]),
                    torch.tensor(data[i][1]),
                    1,
                )
            logits = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            targets = labels[:, 1:]
            token_losses = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
            )
            answered = (targets != IGNORE).sum(dim=1)
            if config.loss_weighting == "token":
                loss = token_losses.sum() / answered.sum()
            else:  # the mean over the batch's answers of each answer's mean
                loss = (token_losses.sum(dim=1) / answered).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            rates.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    weights = {n: p.detach() for n, p in peft_model.named_parameters() if p.requires_grad}
    return losses, rates, weights


@pytest.mark.parametrize("weighting", ["token", "example"])
def test_the_recipe_learns_what_a_plain_peft_loop_learns(tokenizer, tmp_path, weighting):
    from safetensors.torch import load_file

    config = _config(weighting)
    result = run(
        config, tiny_model(tokenizer), tokenizer, EXAMPLES, EXAMPLES[:2], tmp_path, data_hash="x"
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    recipe_losses = [r["loss"] for r in records if "loss" in r]
    plain_losses, plain_rates, plain_weights = _plain_peft_loop(config, tokenizer, EXAMPLES)

    assert len(recipe_losses) == len(plain_losses) == 6
    assert recipe_losses == pytest.approx(plain_losses, rel=1e-4)
    # the same warm-up and decay, logged as the rate each step used
    assert [r["lr"] for r in records if "loss" in r] == pytest.approx(plain_rates)
    assert plain_rates[0] < plain_rates[1] == config.train.lr > plain_rates[-1]
    assert plain_losses[-1] < plain_losses[0]
    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert len(saved) == len(plain_weights) > 0
    for name, value in plain_weights.items():
        key = name.replace(".default", "")
        assert torch.allclose(saved[key], value, atol=1e-5), key
    # it did learn (LoRA's B starts at zero), so the comparison means something
    assert min(v.abs().max() for n, v in plain_weights.items() if "lora_B" in n) > 1e-2
