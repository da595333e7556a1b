"""LoRA (and QLoRA on CUDA) supervised fine-tuning of a causal LM on chat examples.

Lifecycle: setup (model, adapter, data) -> train (with checkpoints and exact resume) -> save
(adapter, tokenizer with its chat template, manifest). Only assistant tokens carry labels, and the
end-of-turn token is among them, so the model learns to stop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune.config import to_dict
from finetune.datasets import SFTExample
from finetune.run_log import RunLog

IGNORE = -100
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and where the last good checkpoint is."""


@dataclass
class LoraArgs:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    # 0: every decoder layer; N: only the last N (backward stops below them: faster, less capacity)
    last_layers: int = 0

    def __post_init__(self) -> None:
        if self.last_layers < 0:
            raise ValueError(f"lora.last_layers={self.last_layers}: use 0 (all) or a count")
        if self.r < 1 or self.alpha < 1:
            raise ValueError(f"lora.r={self.r} and lora.alpha={self.alpha} must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout={self.dropout}: use 0 <= dropout < 1")


@dataclass
class TrainArgs:
    epochs: int = 1
    max_steps: int = 0  # 0: as many as the epochs take
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 512
    seed: int = 42
    save_every: int = 50  # optimizer steps between checkpoints
    log_every: int = 5
    quantization: Literal["none", "nf4"] = "none"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast matmuls (CPUs with AVX512-BF16)

    def __post_init__(self) -> None:
        problems = [
            f"train.{name}={getattr(self, name)} must be >= {low}"
            for name, low in (
                ("epochs", 1),
                ("batch_size", 1),
                ("grad_accum", 1),
                ("max_length", 16),
                ("save_every", 1),
                ("log_every", 1),
                ("max_steps", 0),
            )
            if getattr(self, name) < low
        ]
        if not self.lr > 0:
            problems.append(f"train.lr={self.lr} must be > 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class DataArgs:
    source: Literal["demo", "jsonl"] = "demo"
    demo_dir: Path | None = None  # default: TUNEGRAPH_HOME/demo
    train_file: Path | None = None  # source=jsonl: {"messages": [...]} lines
    val_file: Path | None = None  # source=jsonl: optional; else split from train_file
    val_fraction: float = 0.2
    max_ratio: float = 2.0
    max_val_examples: int = 0  # 0: all; N: a seeded sample of N (cheaper per-epoch eval loss)


@dataclass
class TextRecipeConfig:
    base_model: str = "smollm2-135m-instruct"
    name: str = "manual-lora"
    lora: LoraArgs = field(default_factory=LoraArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    data: DataArgs = field(default_factory=DataArgs)


# ---- tokenisation ------------------------------------------------------------------------------


def encode(example: SFTExample, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are IGNORE everywhere but the final assistant turn.

    The prompt is the chat template up to the assistant turn (with the generation prompt), so
    the labels start exactly where the model's answer starts and include its end-of-turn token.
    """
    messages = list(example.messages)
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    if full[: len(prompt)] != prompt:
        raise TrainingError(
            "the chat template renders the prompt differently with and without the answer; "
            "tunegraph cannot find where the assistant turn starts for this model"
        )
    labels = [IGNORE] * len(prompt) + full[len(prompt) :]
    return full, labels


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """An epoch's batches of example indices, in an order fixed by the seed and the epoch
    (which is what exact resume replays).

    Batches are drawn at random, not grouped by length: grouped batches are each nearly one kind
    of question (SPEC answers are short, procedures long), and those one-sided steps learned far
    worse (the step-for-step eval loss was about twice TRL's). Packing removes the padding that
    grouping used to avoid.
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def pack(lengths: list[int], max_length: int) -> list[list[int]]:
    """Rows of at most ``max_length`` tokens holding whole examples (first fit, longest first);
    returns the positions in ``lengths`` of the examples in each row."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, room in enumerate(free) if room >= lengths[index]), None)
        if row is None:
            rows.append([])
            free.append(max_length)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= lengths[index]
    return rows


def collate_packed(items: list[tuple[list[int], list[int]]], max_length: int, pad_id: int):
    """Pack examples into rows; position ids restart at 0 for every example, which makes the
    model's attention block-diagonal (no example sees another), so the loss of an example is
    the same packed or alone. Returns input_ids, position_ids, labels and the real token count.
    """
    import torch

    rows = pack([len(ids) for ids, _ in items], max_length)
    width = max(sum(len(items[i][0]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            ids, labs = items[i]
            input_ids[r, start : start + len(ids)] = torch.tensor(ids)
            labels[r, start : start + len(ids)] = torch.tensor(labs)
            positions[r, start : start + len(ids)] = torch.arange(len(ids))
            start += len(ids)
        positions[r, start:] = torch.arange(width - start)  # the tail: its own segment
    return input_ids, positions, labels, sum(len(ids) for ids, _ in items)


def collate(items: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return input_ids, attention, labels


# ---- the recipe ----------------------------------------------------------------------------


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    metrics: dict[str, Any]


def run(
    config: TextRecipeConfig,
    model: Any,
    tokenizer: Any,
    train_examples: list[SFTExample],
    val_examples: list[SFTExample],
    output_dir: Path,
    *,
    data_hash: str,
    adapter_dir: Path | None = None,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``model``; checkpoints and metrics go to ``output_dir``, the
    adapter to ``adapter_dir`` (default ``output_dir/adapter``).

    ``stop_after_steps`` ends the run early after saving a checkpoint (used to test resume).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    args = config.train
    if args.quantization == "nf4" and not torch.cuda.is_available():
        raise TrainingError(
            "train.quantization=nf4 (QLoRA) needs a CUDA GPU and bitsandbytes; on this machine "
            "use train.quantization=none (plain LoRA)"
        )
    torch.manual_seed(args.seed)
    model.config.use_cache = False
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules),
            layers_to_transform=_layers(config.lora.last_layers, model.config),
            task_type="CAUSAL_LM",
        ),
    )
    train_data = [encode(e, tokenizer) for e in train_examples]
    val_data = [encode(e, tokenizer) for e in val_examples]
    if not train_data:
        raise TrainingError("no training examples: check data.source and the data files")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    if max(len(ids) for ids, _ in train_data) > args.max_length:
        raise TrainingError(
            f"an example is longer than train.max_length={args.max_length} tokens: drop it "
            "first (build_dataset reports and drops them) or raise train.max_length"
        )
    steps_per_epoch = math.ceil(math.ceil(len(train_data) / args.batch_size) / args.grad_accum)
    total_steps = args.max_steps or steps_per_epoch * args.epochs
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(total_steps * args.warmup_ratio), total_steps
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = output_dir / "checkpoints"
    state = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0}
    latest = _latest_checkpoint(checkpoints) if resume else None
    if latest:
        state = _load_checkpoint(latest, peft_model, optimizer, scheduler)
    log = RunLog(output_dir, resume_step=state["step"] if latest else None)

    device = next(peft_model.parameters()).device
    autocast = _autocast(args.precision, device)
    peft_model.train()
    bar = (
        progress(total=total_steps, initial=state["step"], desc="train", unit="step")
        if progress
        else None
    )
    started, tokens_at_start = time.perf_counter(), state["tokens"]
    eval_losses: list[float] = []
    eval_seconds = 0.0  # kept out of tokens/s
    last_loss = float("nan")
    while state["step"] < total_steps:
        epoch_batches = batches(len(train_data), args.batch_size, args.seed, state["epoch"])
        groups = [
            epoch_batches[i : i + args.grad_accum]
            for i in range(0, len(epoch_batches), args.grad_accum)
        ]
        while state["batch"] < len(groups) and state["step"] < total_steps:
            group = groups[state["batch"]]
            label_tokens = sum(
                sum(1 for t in train_data[i][1] if t != IGNORE) for b in group for i in b
            )
            if label_tokens == 0:
                raise TrainingError("a batch has no label tokens: every answer was cut off")
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for batch in group:
                input_ids, positions, labels, tokens = collate_packed(
                    [train_data[i] for i in batch], args.max_length, pad_id
                )
                with autocast:
                    loss_sum = label_loss_sum(
                        peft_model,
                        input_ids.to(device),
                        None,
                        labels.to(device),
                        position_ids=positions.to(device),
                    )
                (loss_sum / label_tokens).backward()
                step_loss += loss_sum.item() / label_tokens
                state["tokens"] += tokens
            if not math.isfinite(step_loss):
                log.close()
                good = _latest_checkpoint(checkpoints)
                raise TrainingError(
                    f"the loss became {step_loss} at step {state['step'] + 1}; lower train.lr. "
                    f"Last good checkpoint: {good or 'none yet'} (rerun to resume from it)"
                )
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            state["batch"] += 1
            last_loss = step_loss
            elapsed = time.perf_counter() - started - eval_seconds
            tokens_per_s = (state["tokens"] - tokens_at_start) / elapsed if elapsed > 0 else 0.0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
            if state["step"] % args.log_every == 0 or state["step"] == total_steps:
                log.write(
                    {
                        "step": state["step"],
                        "epoch": state["epoch"],
                        "loss": step_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "tokens_per_s": tokens_per_s,
                    },
                )
            if state["step"] % args.save_every == 0 or stop_after_steps == state["step"]:
                _save_checkpoint(checkpoints, state, peft_model, optimizer, scheduler)
            if stop_after_steps == state["step"]:
                if bar is not None:
                    bar.close()
                log.close()
                return TrainResult(output_dir, state["step"], {"stopped_early": True})
        if state["batch"] >= len(groups):  # an epoch ended: evaluate, then the next epoch
            eval_started = time.perf_counter()
            eval_loss = evaluate_loss(peft_model, val_data, args.batch_size, pad_id, args.precision)
            eval_seconds += time.perf_counter() - eval_started
            eval_losses.append(eval_loss)
            log.write(
                {"step": state["step"], "epoch": state["epoch"], "eval_loss": eval_loss},
            )
            state["epoch"] += 1
            state["batch"] = 0
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started - eval_seconds
    if not eval_losses or state["batch"]:
        eval_losses.append(
            evaluate_loss(peft_model, val_data, args.batch_size, pad_id, args.precision)
        )
        log.write(
            {"step": state["step"], "epoch": state["epoch"], "eval_loss": eval_losses[-1]},
        )
    metrics = {
        "train_loss": last_loss,
        "eval_loss": eval_losses[-1],
        "steps": state["step"],
        "train_tokens": state["tokens"],
        "tokens_per_s": (state["tokens"] - tokens_at_start) / elapsed if elapsed else 0.0,
        "train_examples": len(train_data),
        "val_examples": len(val_data),
    }
    log.close()
    target = adapter_dir or output_dir / "adapter"
    _save_adapter(target, peft_model, tokenizer, config, metrics, data_hash)
    return TrainResult(target, state["step"], metrics)


def label_loss_sum(
    model: Any, input_ids: Any, attention: Any, labels: Any, *, position_ids: Any = None
) -> Any:
    """Summed next-token cross-entropy over the positions that have labels.

    The vocabulary projection runs only at those positions (a short answer after a long prompt
    needs a few rows of logits, not one per token); models that rescale or soft-cap their
    logits take the plain full-logits path, which gives the same value.
    """
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config
    targets = labels[:, 1:]
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        logits = model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=position_ids,
            use_cache=False,  # with a cache, transformers ignores packed position ids
        ).logits[:, :-1]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
    hidden = causal_lm.get_decoder()(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids,
        use_cache=False,  # with a cache, transformers ignores packed position ids
    )
    selected = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden.last_hidden_state[:, :-1][selected])
    return torch.nn.functional.cross_entropy(logits.float(), targets[selected], reduction="sum")


def _layers(last: int, model_config: Any) -> list[int] | None:
    """The decoder layer indices LoRA goes into: None for all, else the last ``last``."""
    total = model_config.num_hidden_layers
    if not last or last >= total:
        return None
    return list(range(total - last, total))


def _autocast(precision: str, device: Any) -> Any:
    """bfloat16 autocast for ``precision == "bf16"``; a no-op context otherwise."""
    import contextlib

    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def evaluate_loss(
    model: Any,
    data: list[tuple[list[int], list[int]]],
    batch_size: int,
    pad_id: int,
    precision: str = "fp32",
) -> float:
    """Mean loss per label token over ``data`` (nan when there is no data)."""
    import torch

    if not data:
        return float("nan")
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    data = sorted(data, key=lambda item: len(item[0]))  # similar lengths: little padding
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            input_ids, attention, labels = (
                t.to(device) for t in collate(data[start : start + batch_size], pad_id)
            )
            with _autocast(precision, device):
                total += label_loss_sum(model, input_ids, attention, labels).item()
            count += int((labels[:, 1:] != IGNORE).sum())
    model.train()
    return total / count if count else float("nan")


# ---- checkpoints, metrics, the saved adapter ----------------------------------------------


def _latest_checkpoint(checkpoints: Path) -> Path | None:
    if not checkpoints.is_dir():
        return None
    done = [
        p
        for p in checkpoints.iterdir()
        if p.name.startswith("step-") and (p / "state.json").exists()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _save_checkpoint(
    checkpoints: Path, state: dict, model: Any, optimizer: Any, scheduler: Any
) -> None:
    """Everything exact resume needs, written to a temp dir and renamed into place."""
    import torch

    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".step-", dir=checkpoints))
    model.save_pretrained(tmp / "adapter")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        },
        tmp / "training_state.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state))
    target = checkpoints / f"step-{state['step']:06d}"
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    for old in sorted(p for p in checkpoints.iterdir() if p.name.startswith("step-"))[:-2]:
        shutil.rmtree(old)  # keep the last two


def _load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(path / "adapter" / "adapter_model.safetensors")))
    saved = torch.load(path / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    return json.loads((path / "state.json").read_text())


def _save_adapter(
    target: Path,
    model: Any,
    tokenizer: Any,
    config: TextRecipeConfig,
    metrics: dict,
    data_hash: str,
) -> None:
    import peft
    import torch
    import transformers

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)  # the chat template travels with the adapter
    manifest = {
        "kind": "text-lora",
        "base_model": config.base_model,
        "data_sha256": data_hash,
        "config": to_dict(config),
        "metrics": metrics,
        "chat_template_sha256": hashlib.sha256(
            (tokenizer.chat_template or "").encode()
        ).hexdigest(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    (tmp / "tunegraph-manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
