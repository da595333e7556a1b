"""tunegraph's text LoRA recipe against TRL's SFTTrainer: like for like, then each at its defaults.

Row 1, like for like: both sides train the embedded SmolLM2-135M-Instruct on the same demo
examples (configs/text/smollm2_quick.yaml's data: train phrasings, kinds balanced), in the same
batches in the same order, for the quick profile's two epochs, with its LoRA (r 16, alpha 32, no
dropout, all seven projections of the last 8 decoder layers: peft's ``layers_to_transform`` on
TRL's side), the same learning rate, warm-up and linear decay, gradient clipping and loss:
cross-entropy on the answer tokens only, averaged per token (TRL: a prompt-completion dataset,
whose default is completion-only loss; the recipe: ``loss_weighting=token``, the one change to
the profile, since TRL has no per-answer average). The recipe starts its second epoch at the
first trained layer from cached hidden states (``cache_frozen_layers``, exact); TRL runs all 30
layers in both. Both run in the precision the
recipe's ``precision: auto`` picks on this machine (bf16 autocast where bfloat16 is native,
fp32 elsewhere; printed). TRL runs without activation checkpointing (the recipe does not
checkpoint; at this size it only costs TRL a recompute) and padding-free (each batch flattened
into one row, as the recipe packs it). Every other SFTConfig field is TRL's default.

Row 2, each side at its own defaults: the recipe's quick profile as shipped (its YAML, no
overrides: per-answer loss, the last 8 layers, two epochs) on the same examples, and TRL with
its default SFTConfig (learning rate 2e-5, bf16 autocast, activation checkpointing, loss on every
token of the conversation) and PEFT's default LoraConfig, stopped when it has trained as long
(wall time) as the recipe did.

Each side trains in its own process, so that peak RSS is its own. Afterwards every adapter is
scored by the same function on the same validation examples (mean loss per answer token,
float32). Throughput is tokens trained on per second of wall time (the headline), and per
second of the process's CPU time (``cpu_speedup_vs_trl``: steadier when other jobs share the
cores). Per-step training loss and learning rate of every run go to OUT/losses.csv and
OUT/losses.json, a plot to OUT/losses.png, the summary to OUT/result.json.

    .venv/bin/pip install -e '.[bench]'     # TRL
    python benchmarks/train_text.py [--quick] [--out DIR]

Last line: {"speedup_vs_trl": ..., "eval_loss": ..., "eval_loss_trl": ..., ..., "defaults": {...}}
(the top-level figures are row 1's).

Over 400 lines on purpose: a benchmark is one script that a reader runs and audits; TRL's side and
the recipe's side sit next to each other so that "like for like" can be checked setting by setting,
with the one scoring function and the outputs they share.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "text" / "smollm2_quick.yaml"
# Row 1's change to the quick profile (TRL's side gets the same settings, see _train_trl).
EQUAL = ("loss_weighting=token", "train.log_every=1")
ROWS = ("equal", "defaults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="96 training and 60 validation examples"
    )
    parser.add_argument("--out", type=Path, help="[default: TUNEGRAPH_HOME/runs/bench-train-text]")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # ROW:SIDE, in a child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        row, side = args.side.split(":")
        _train_side(row, side, args.work, args.seconds)
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("TRL is not installed: .venv/bin/pip install -e '.[bench]'")
    from api.settings import Settings

    out = args.out or Settings.from_env().runs_dir / "bench-train-text"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        precision = _prepare_data(work, quick=args.quick)
        results: dict[str, dict] = {}
        for row, side in (
            ("equal", "trl"),
            ("equal", "recipe"),
            ("defaults", "recipe"),
            ("defaults", "trl"),  # as long as the recipe's quick profile trained
        ):
            print(f"training: {row} / {side}", flush=True)
            command = [sys.executable, __file__, "--side", f"{row}:{side}", "--work", str(work)]
            if row == "defaults" and side == "trl":
                command += ["--seconds", str(results["defaults:recipe"]["seconds"])]
            subprocess.run(command, check=True)
            results[f"{row}:{side}"] = json.loads((work / f"{row}-{side}.json").read_text())
        losses = _eval_losses(work, list(results.values()))
    for key, loss in losses.items():
        results[key]["eval_loss"] = loss

    _write_curves(out, results)
    summary = _summary(results, precision, out)
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    titles = {
        "equal": f"like for like ({precision}, quick profile's LoRA and steps, per-token loss)",
        "defaults": "each at its defaults (recipe: quick profile; TRL: SFTConfig(), same time)",
    }
    for row in ROWS:
        print(titles[row])
        for side, name in (("trl", "TRL SFTTrainer"), ("recipe", "tunegraph recipe")):
            r = results[f"{row}:{side}"]
            print(
                f"  {name}: {r['steps']} steps, {r['tokens_per_s']:.0f} tokens/s "
                f"({r['tokens_per_cpu_s']:.0f} per CPU second), "
                f"{r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"eval loss {r['eval_loss']:.4f}"
            )
    print(f"per-step losses: {out / 'losses.csv'}, {out / 'losses.png'}")
    print(json.dumps(summary))


def _summary(results: dict[str, dict], precision: str, out: Path) -> dict:
    def row(name: str) -> dict:
        ours, theirs = results[f"{name}:recipe"], results[f"{name}:trl"]
        return {
            "speedup_vs_trl": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2),
            "eval_loss": round(ours["eval_loss"], 4),
            "eval_loss_trl": round(theirs["eval_loss"], 4),
            "tokens_per_s": round(ours["tokens_per_s"], 1),
            "tokens_per_s_trl": round(theirs["tokens_per_s"], 1),
            "cpu_speedup_vs_trl": round(ours["tokens_per_cpu_s"] / theirs["tokens_per_cpu_s"], 2),
            "seconds": round(ours["seconds"], 1),
            "seconds_trl": round(theirs["seconds"], 1),
            "steps": ours["steps"],
            "steps_trl": theirs["steps"],
            "peak_rss_mb": round(ours["peak_rss_mb"]),
            "peak_rss_mb_trl": round(theirs["peak_rss_mb"]),
        }

    return {**row("equal"), "precision": precision, "defaults": row("defaults"), "out": str(out)}


def _load(overrides: tuple[str, ...] = ()):
    from api import composition
    from api.settings import Settings
    from finetune.config import load_config
    from finetune.recipes.text_lora import TextRecipeConfig

    config = load_config(TextRecipeConfig, CONFIG, overrides)
    store = composition.model_store(Settings.from_env())  # reuses TUNEGRAPH_HOME's model cache
    model, tokenizer = store.load_causal_lm(config.base_model)
    return config, model, tokenizer


def _prepare_data(work: Path, *, quick: bool) -> str:
    """The quick profile's training set (a seeded sample of 96 with --quick) and a fixed
    validation sample, as messages JSONL; returns the precision ``precision: auto`` picks here."""
    import random

    import torch

    from finetune.datasets import build_dataset, chat_token_counter, demo_examples, write_jsonl
    from finetune.trainer import effective_precision
    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

    config, model, tokenizer = _load()
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
    # whole batches only, so that TRL, reading the recipe's order in sequence, gets its batches
    train = train[: len(train) - len(train) % config.train.batch_size]
    val_sample = random.Random(0).sample(report.val, 60 if quick else 160)
    write_jsonl(train, work / "train.jsonl")
    write_jsonl(val_sample, work / "val.jsonl")
    device = next(model.parameters()).device
    if device.type == "cpu" and torch.cuda.is_available():  # pragma: no cover (GPU machines)
        device = torch.device("cuda")
    return effective_precision("auto", device)


def _read(path: Path):
    from finetune.datasets import read_sft_jsonl

    return read_sft_jsonl(path)[0]


def _train_side(row: str, side: str, work: Path, seconds: float | None) -> None:
    import dataclasses

    from finetune.trainer import effective_precision

    config, model, tokenizer = _load(EQUAL if row == "equal" else ("train.log_every=1",))
    precision = effective_precision("auto", next(model.parameters()).device)
    train = _read(work / "train.jsonl")
    run_dir = work / f"{row}-{side}-run"
    if side == "recipe":
        from finetune.recipes.text_lora import run

        if row == "equal":
            config = dataclasses.replace(
                config, train=dataclasses.replace(config.train, precision=precision)
            )
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, save_every=10**6)
        )
        # One example of validation: the recipe's own eval passes are not timed anyway.
        cpu = _cpu_seconds()
        result = run(config, model, tokenizer, train, train[:1], run_dir, data_hash="bench")
        cpu = _cpu_seconds() - cpu
        tokens_per_s = result.metrics["tokens_per_s"]
        elapsed = result.metrics["train_tokens"] / tokens_per_s
        adapter, steps = result.adapter_dir, result.steps
        curve = [
            {"step": r["step"], "loss": r["loss"], "lr": r["lr"]}
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r
        ]
    else:
        tokens_per_s, elapsed, cpu, adapter, steps, curve = _train_trl(
            row, config, model, tokenizer, train, run_dir, precision, seconds
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (work / f"{row}-{side}.json").write_text(
        json.dumps(
            {
                "row": row,
                "side": side,
                "tokens_per_s": tokens_per_s,
                "seconds": elapsed,
                "tokens_per_cpu_s": tokens_per_s * elapsed / cpu,
                "steps": steps,
                "peak_rss_mb": peak,
                "adapter": str(adapter),
                "curve": curve,
            }
        )
    )


def _train_trl(row, config, model, tokenizer, train, run_dir: Path, precision, seconds):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from finetune.trainer import batches

    common = {
        "output_dir": str(run_dir),
        "save_strategy": "no",
        "report_to": [],
        "logging_steps": 1,
        "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
    }
    if row == "equal":
        args, lora = config.train, config.lora
        steps = args.epochs * -(-len(train) // args.batch_size)
        # the recipe's batches in its order, epoch after epoch, read in sequence
        order = [
            i
            for epoch in range(args.epochs)
            for batch in batches(len(train), args.batch_size, args.seed, epoch)
            for i in batch
        ]
        dataset = Dataset.from_list(
            [
                {"prompt": list(train[i].messages[:-1]), "completion": list(train[i].messages[-1:])}
                for i in order
            ]
        )
        sft_args = SFTConfig(
            **common,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            max_steps=steps,
            learning_rate=args.lr,
            warmup_steps=int(steps * args.warmup_ratio),  # as the recipe computes it
            lr_scheduler_type="linear",
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            max_length=None,  # padding-free does not truncate; no example is longer anyway
            seed=args.seed,
            train_sampling_strategy="sequential",
            bf16=precision == "bf16",
            gradient_checkpointing=False,
            padding_free=True,
        )
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            layers_to_transform=lora.layers(model.config.num_hidden_layers),
            task_type="CAUSAL_LM",
        )
    else:
        dataset = Dataset.from_list([{"messages": list(e.messages)} for e in train])
        sft_args = SFTConfig(**common)
        peft_config = LoraConfig(task_type="CAUSAL_LM")

    class StopAfter(TrainerCallback):
        """Row 2: stop once TRL has trained as long as the recipe did."""

        def on_train_begin(self, *_args, **_kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, _args, state, control, **_kwargs):
            if seconds is not None and time.perf_counter() - self.started >= seconds:
                control.should_training_stop = True

    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[StopAfter()],
    )
    started, cpu = time.perf_counter(), _cpu_seconds()
    trainer.train()
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    # TRL's own count of the tokens it trained on (include_num_input_tokens_seen="non_padding"
    # would leave out every <|im_end|>, which is also the pad token)
    tokens = max(h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h)
    adapter = run_dir / "adapter"
    trainer.model.save_pretrained(adapter)
    curve = [
        {"step": h["step"], "loss": h["loss"], "lr": h["learning_rate"]}
        for h in trainer.state.log_history
        if "loss" in h
    ]
    return tokens / elapsed, elapsed, cpu, adapter, trainer.state.global_step, curve


def _cpu_seconds() -> float:
    """CPU time of this process so far: what a run costs when other jobs share the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _eval_losses(work: Path, results: list[dict]) -> dict[str, float]:
    """Every adapter, the same validation examples, the same scoring function (float32)."""
    from peft import PeftModel

    from finetune.recipes.text_lora import encode, evaluate_loss

    val = _read(work / "val.jsonl")
    losses = {}
    for result in results:
        _, model, tokenizer = _load()
        model = PeftModel.from_pretrained(model, result["adapter"])
        data = [encode(e, tokenizer) for e in val]
        losses[f"{result['row']}:{result['side']}"] = evaluate_loss(
            model, data, 8, tokenizer.eos_token_id
        )
    return losses


def _write_curves(out: Path, results: dict[str, dict]) -> None:
    """Per-step training loss and learning rate of every run: CSV, JSON and a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "losses.json").write_text(
        json.dumps({key: r["curve"] for key, r in results.items()}, indent=1)
    )
    with (out / "losses.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "side", "step", "loss", "lr"])
        for r in results.values():
            for point in r["curve"]:
                writer.writerow([r["row"], r["side"], point["step"], point["loss"], point["lr"]])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, row in zip(axes, ROWS, strict=True):
        for side in ("trl", "recipe"):
            r = results[f"{row}:{side}"]
            ax.plot(
                [p["step"] for p in r["curve"]],
                [p["loss"] for p in r["curve"]],
                marker=".",
                label=f"{side} (eval {r['eval_loss']:.3f})",
            )
        ax.set_title("like for like" if row == "equal" else "each at its defaults")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
