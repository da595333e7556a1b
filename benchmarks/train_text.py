"""tunegraph's text LoRA recipe against TRL's SFTTrainer on the same work.

Both sides train the embedded SmolLM2-135M-Instruct with the same LoRA config (r 16 in the last
12 layers, dropout 0.05, bf16 autocast as TRL's default does: PINNED below), the same demo
examples (configs/text/smollm2_quick.yaml's data: train phrasings, kinds balanced), the same
batch size, number of steps, learning rate and warm-up. TRL runs with its default SFTConfig otherwise (gradient checkpointing, bf16 autocast,
loss on every token, batches padded to their longest example, no packing). Each side runs in its
own process so that peak RSS is its own. Afterwards both adapters are scored by the same function
on the same validation examples (mean loss per answer token, float32), so "eval loss" means the
same thing on both sides. The learning rate is the recipe's on both sides: TRL's default (2e-5)
would learn far less in the same steps and make the eval-loss comparison meaningless.

    .venv/bin/pip install -e '.[bench]'     # TRL
    python benchmarks/train_text.py [--quick] [--steps N]

Last line: {"speedup_vs_trl": ..., "eval_loss": ..., "eval_loss_trl": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "text" / "smollm2_quick.yaml"
# The quick profile's LoRA as it was when the README's figures were measured (both sides share
# it); the profile itself has since dropped dropout and trains the last 8 layers for 2 epochs.
PINNED = ("train.epochs=1", "lora.dropout=0.05", "lora.last_layers=12", "train.precision=bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one epoch of 96 examples per side (< 5 minutes)"
    )
    parser.add_argument("--steps", type=int, default=None, help="[default: one epoch]")
    parser.add_argument("--side", choices=["recipe", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _train_side(args.side, args.steps, args.work)
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("TRL is not installed: .venv/bin/pip install -e '.[bench]'")

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        steps = args.steps or _prepare_data(work, quick=args.quick)
        results = {}
        for side in ("trl", "recipe"):  # the baseline first
            print(f"training: {side} ({steps} steps)", flush=True)
            command = [sys.executable, __file__, "--side", side, "--steps", str(steps)]
            subprocess.run([*command, "--work", str(work)], check=True)
            results[side] = json.loads((work / f"{side}.json").read_text())
        losses = _eval_losses(work)

    ours, theirs = results["recipe"], results["trl"]
    for name, row in (("TRL SFTTrainer (baseline)", theirs), ("tunegraph recipe", ours)):
        print(
            f"{name}: {row['tokens_per_s']:.0f} tokens/s, {row['seconds']:.0f} s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB, eval loss {losses[row['side']]:.4f}"
        )
    print(
        json.dumps(
            {
                "speedup_vs_trl": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2),
                "eval_loss": round(losses["recipe"], 4),
                "eval_loss_trl": round(losses["trl"], 4),
                "tokens_per_s": round(ours["tokens_per_s"], 1),
                "tokens_per_s_trl": round(theirs["tokens_per_s"], 1),
                "peak_rss_mb": round(ours["peak_rss_mb"]),
                "peak_rss_mb_trl": round(theirs["peak_rss_mb"]),
                "steps": steps,
            }
        )
    )


def _load():
    from api import composition
    from api.settings import Settings
    from finetune.config import load_config
    from finetune.recipes.text_lora import TextRecipeConfig

    config = load_config(TextRecipeConfig, CONFIG, PINNED)
    store = composition.model_store(Settings.from_env())  # reuses TUNEGRAPH_HOME's model cache
    model, tokenizer = store.load_causal_lm(config.base_model)
    return config, model, tokenizer


def _prepare_data(work: Path, *, quick: bool) -> int:
    """The quick profile's training set (a seeded sample of 96 with --quick) and a fixed
    validation sample, as messages JSONL; returns the steps of one epoch.

    One whole epoch on both sides, so that each side learns from every example exactly once."""
    import random

    from finetune.datasets import build_dataset, chat_token_counter, demo_examples, write_jsonl
    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

    config, _, tokenizer = _load()
    corpus = generate_demo_corpus(work / "demo", DemoCorpusConfig())
    train, val = demo_examples(corpus.root)
    report = build_dataset(
        train,
        count_tokens=chat_token_counter(tokenizer),
        val_examples=val,
        max_length=config.train.max_length,
        max_ratio=config.data.max_ratio,
        seed=config.train.seed,
    )
    train = random.Random(0).sample(report.train, 96) if quick else report.train
    val_sample = random.Random(0).sample(report.val, 60 if quick else 160)
    write_jsonl(train, work / "train.jsonl")
    write_jsonl(val_sample, work / "val.jsonl")
    return -(-len(train) // config.train.batch_size)


def _read(path: Path):
    from finetune.datasets import read_sft_jsonl

    return read_sft_jsonl(path)[0]


def _train_side(side: str, steps: int, work: Path) -> None:
    import dataclasses

    config, model, tokenizer = _load()
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, max_steps=steps, save_every=10**6)
    )
    train = _read(work / "train.jsonl")
    if side == "recipe":
        from finetune.recipes.text_lora import run

        # One example of validation: the recipe's own end-of-run eval pass is not timed anyway.
        result = run(
            config, model, tokenizer, train, train[:1], work / "recipe-run", data_hash="bench"
        )
        tokens_per_s = result.metrics["tokens_per_s"]
        seconds = result.metrics["train_tokens"] / tokens_per_s
        adapter = result.adapter_dir
    else:
        tokens_per_s, seconds, adapter = _train_trl(config, model, tokenizer, train, work, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (work / f"{side}.json").write_text(
        json.dumps(
            {
                "side": side,
                "tokens_per_s": tokens_per_s,
                "seconds": seconds,
                "peak_rss_mb": peak,
                "adapter": str(adapter),
            }
        )
    )


def _train_trl(config, model, tokenizer, train, work: Path, steps: int):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    lora = config.lora
    args = SFTConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=config.train.batch_size,
        gradient_accumulation_steps=config.train.grad_accum,
        max_steps=steps,
        learning_rate=config.train.lr,
        warmup_steps=int(steps * config.train.warmup_ratio),  # as the recipe computes it
        lr_scheduler_type="linear",
        max_grad_norm=config.train.max_grad_norm,
        seed=config.train.seed,
        save_strategy="no",
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        use_cpu=not torch.cuda.is_available(),  # TRL's default bf16 then autocasts on the CPU
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": list(e.messages)} for e in train]),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    adapter = work / "trl-adapter"
    trainer.model.save_pretrained(adapter)
    return tokens / seconds, seconds, adapter


def _eval_losses(work: Path) -> dict[str, float]:
    """Both adapters, the same validation examples, the same scoring function."""
    from peft import PeftModel

    from finetune.recipes.text_lora import encode, evaluate_loss

    val = _read(work / "val.jsonl")
    losses = {}
    for side in ("trl", "recipe"):
        _, model, tokenizer = _load()
        adapter = json.loads((work / f"{side}.json").read_text())["adapter"]
        model = PeftModel.from_pretrained(model, adapter)
        data = [encode(e, tokenizer) for e in val]
        losses[side] = evaluate_loss(model, data, 8, tokenizer.eos_token_id)
    return losses


if __name__ == "__main__":
    main()
