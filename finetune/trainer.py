"""The training loop every recipe shares, and the pieces around it.

A recipe sets up its model and data, then hands :func:`train_loop` a ``step`` function (forward
and backward over the micro-batches of one optimizer step) and an ``evaluate`` function. The loop
owns the rest, the same for text and vision: AdamW over the trainable parameters with linear
warmup and decay, gradient clipping, a seeded data order per epoch, evaluation after each epoch
(with ``train.patience``, early stopping on it and the best epoch's weights kept),
checkpoints with exact resume (trainable weights, buffers, optimizer, scheduler, RNG and the
position in the data), a stop with a clear message on a non-finite loss, a progress bar with
throughput, and metrics as JSONL (TensorBoard when installed). :func:`finish` saves the
result with its manifest, atomically, and returns the one :class:`TrainResult`.

Over 400 lines on purpose: the loop, its checkpoints and its precision settings are one
mechanism that every recipe shares; split up, a reader would lose the resume contract.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from finetune.artifact import Manifest, save_artifact, write_atomically
from finetune.run_log import RunLog

IGNORE = -100  # the label of a position the loss skips (prompt, padding, image tokens)
# how the base's linear layers load for training: full precision, or through bitsandbytes
# (QLoRA: 4-bit NF4, or 8-bit) on CUDA or CPU; finetune/quantization.py
Quantization = Literal["none", "nf4", "int8"]
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

    def layers(self, total: int) -> list[int] | None:
        """The decoder layer indices LoRA goes into (of ``total``): None for all.

        >>> LoraArgs(last_layers=2).layers(30), LoraArgs().layers(30)
        ([28, 29], None)
        """
        if not self.last_layers or self.last_layers >= total:
            return None
        return list(range(total - self.last_layers, total))

    def peft_config(self, **extra: Any) -> Any:
        """PEFT's ``LoraConfig`` for these arguments; ``extra``: task type, layers, modules to
        save, or other target modules (a regex)."""
        from peft import LoraConfig

        options = {
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": list(self.target_modules),
        }
        return LoraConfig(**{**options, **extra})


@dataclass
class TrainArgs:
    epochs: int = 1
    max_steps: int = 0  # 0: as many as the epochs take
    # N > 0: stop once the validation loss (checked after each epoch) has not improved for N
    # epochs in a row, and keep the weights of the epoch where it was lowest; 0: run every epoch
    patience: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 512  # tokens (text and vision-language recipes)
    seed: int = 42
    save_every: int = 50  # optimizer steps between checkpoints
    log_every: int = 5
    quantization: Quantization = "none"
    # bf16: autocast matmuls, fast only where the hardware computes bfloat16 natively (GPUs,
    # CPUs with AVX512-BF16/AMX; elsewhere several times slower than fp32); auto: bf16 there,
    # fp32 elsewhere
    precision: Literal["fp32", "bf16", "auto"] = "fp32"

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
                ("patience", 0),
            )
            if getattr(self, name) < low
        ]
        if not self.lr > 0:
            problems.append(f"train.lr={self.lr} must be > 0")
        if problems:
            raise ValueError("; ".join(problems))


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """An epoch's batches of example indices, in an order fixed by the seed and the epoch
    (which is what exact resume replays).

    >>> batches(5, 2, seed=1, epoch=0) == batches(5, 2, seed=1, epoch=0)
    True
    >>> sorted(i for b in batches(5, 2, seed=1, epoch=0) for i in b)
    [0, 1, 2, 3, 4]
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def planned_steps(n: int, args: TrainArgs) -> int:
    """Optimizer steps a run over ``n`` examples takes: ``max_steps``, or the epochs'."""
    steps_per_epoch = math.ceil(math.ceil(n / args.batch_size) / args.grad_accum)
    return args.max_steps or steps_per_epoch * args.epochs


def visited(n: int, args: TrainArgs) -> list[int]:
    """The example indices :func:`train_loop` will step through for ``args`` (all of them unless
    ``max_steps`` stops it inside an epoch), in ascending order: a recipe that precomputes
    something per example needs it for these only.

    >>> visited(10, TrainArgs(batch_size=2, max_steps=2, seed=1)) == sorted(
    ...     batches(10, 2, seed=1, epoch=0)[0] + batches(10, 2, seed=1, epoch=0)[1])
    True
    >>> visited(5, TrainArgs(batch_size=2))
    [0, 1, 2, 3, 4]
    """
    total_steps = planned_steps(n, args)
    seen: set[int] = set()
    epoch = 0
    while total_steps > 0 and len(seen) < n:
        epoch_batches = batches(n, args.batch_size, args.seed, epoch)
        for start in range(0, len(epoch_batches), args.grad_accum):
            if total_steps == 0:
                break
            seen.update(i for b in epoch_batches[start : start + args.grad_accum] for i in b)
            total_steps -= 1
        epoch += 1
    return sorted(seen)


def native_bf16(device: Any) -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively (a CPU without AVX512-BF16/AMX
    emulates them: ``benchmarks/precision_matmul.py`` measured 23x fp32's time on an AVX2 CPU)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(is_supported and is_supported())
    return False


def effective_precision(precision: str, device: Any) -> str:
    """``precision`` with ``auto`` decided for ``device``: bf16 where it is native, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def precision_note(precision: str, device: Any = None) -> str:
    """One line for the CLI: the precision training runs in, and why (empty for plain fp32).
    ``device``: default the GPU if there is one, else the CPU."""
    import torch

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "auto":
        chosen = effective_precision(precision, device)
        why = "native" if chosen == "bf16" else "not native"
        return f"precision {chosen} (auto: bfloat16 is {why} on this {device.type.upper()})"
    if precision == "bf16" and not native_bf16(device):
        return (
            f"precision bf16, which this {device.type.upper()} emulates: training will be "
            "several times slower than with train.precision=auto or fp32"
        )
    return ""


def autocast(precision: str, device: Any) -> Any:
    """bfloat16 autocast when ``precision`` is (or ``auto`` resolves to) bf16 on ``device``; a
    no-op context otherwise."""
    import contextlib

    import torch

    if effective_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass
class LoopResult:
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


StepFn = Callable[[list[list[int]]], tuple[float, int]]


def train_loop(
    args: TrainArgs,
    model: Any,
    n_examples: int,
    step: StepFn,
    evaluate: Callable[[], dict[str, float]],
    output_dir: Path,
    *,
    unit: str = "tokens",
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    stop_after_steps: int | None = None,
    desc: str = "train",
) -> LoopResult:
    """Train the parameters of ``model`` that require grad.

    ``step(micro_batches)`` runs forward and backward over the example indices of one optimizer
    step (gradients already scaled) and returns the step's loss and how many ``unit`` s it
    processed. ``evaluate()`` returns eval metrics (e.g. ``{"eval_loss": 1.2}``) and is called
    after every epoch and at the end. ``stop_after_steps`` saves a checkpoint and returns early
    (used to test resume).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    if n_examples == 0:
        raise TrainingError("no training examples: check the data settings of the config")
    # Both generators are seeded here and saved in every checkpoint: augmentation and dropout
    # draw from them, so a resumed run replays exactly what the straight run would have done.
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    total_steps = planned_steps(n_examples, args)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(total_steps * args.warmup_ratio), total_steps
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = output_dir / "checkpoints"
    state = {"step": 0, "epoch": 0, "batch": 0, "units": 0, **NO_BEST_YET}
    latest = latest_checkpoint(checkpoints) if resume else None
    if latest:  # (a checkpoint from before early stopping lacks its keys)
        state = {**state, **_load_checkpoint(latest, model, optimizer, scheduler)}
    log = RunLog(output_dir, resume_step=state["step"] if latest else None)
    rate_key = f"{unit}_per_s"

    model.train()
    bar = (
        progress(total=total_steps, initial=state["step"], desc=desc, unit="step")
        if progress
        else None
    )
    started, units_at_start = time.perf_counter(), state["units"]
    evals: list[dict[str, float]] = []
    eval_seconds = 0.0  # kept out of the throughput
    last_loss = float("nan")

    def run_eval() -> None:
        nonlocal eval_seconds
        eval_started = time.perf_counter()
        model.eval()
        with torch.no_grad():
            evals.append(evaluate())
        model.train()
        eval_seconds += time.perf_counter() - eval_started
        log.write({"step": state["step"], "epoch": state["epoch"], **evals[-1]})

    try:
        while state["step"] < total_steps and not state["stopped"]:
            epoch_batches = batches(n_examples, args.batch_size, args.seed, state["epoch"])
            groups = [
                epoch_batches[i : i + args.grad_accum]
                for i in range(0, len(epoch_batches), args.grad_accum)
            ]
            while state["batch"] < len(groups) and state["step"] < total_steps:
                optimizer.zero_grad(set_to_none=True)
                step_loss, units = step(groups[state["batch"]])
                if not math.isfinite(step_loss):
                    good = latest_checkpoint(checkpoints)
                    raise TrainingError(
                        f"the loss became {step_loss} at step {state['step'] + 1}; lower "
                        f"train.lr. Last good checkpoint: {good or 'none yet'} "
                        "(rerun to resume from it)"
                    )
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                step_lr = scheduler.get_last_lr()[0]  # the rate this step used, for the log
                optimizer.step()
                scheduler.step()
                state["step"] += 1
                state["batch"] += 1
                state["units"] += units
                last_loss = step_loss
                elapsed = time.perf_counter() - started - eval_seconds
                rate = (state["units"] - units_at_start) / elapsed if elapsed > 0 else 0.0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.3f}", **{f"{unit[:3]}_s": f"{rate:.0f}"})
                if state["step"] % args.log_every == 0 or state["step"] == total_steps:
                    log.write(
                        {
                            "step": state["step"],
                            "epoch": state["epoch"],
                            "loss": step_loss,
                            "lr": step_lr,
                            rate_key: rate,
                        }
                    )
                if state["step"] % args.save_every == 0 or stop_after_steps == state["step"]:
                    _save_checkpoint(checkpoints, state, model, optimizer, scheduler)
                if stop_after_steps == state["step"]:
                    return LoopResult(state["step"], {"stopped_early": True}, stopped_early=True)
            if state["batch"] >= len(groups):  # an epoch ended: evaluate, then the next epoch
                run_eval()
                state["epoch"] += 1
                state["batch"] = 0
                if args.patience:
                    _early_stopping(state, evals[-1], args.patience, checkpoints / BEST, model)
        elapsed = time.perf_counter() - started - eval_seconds
        if state["step"] % args.save_every:  # a finished run resumes to its end
            _save_checkpoint(checkpoints, state, model, optimizer, scheduler)
        if not evals or state["batch"]:
            run_eval()
        kept = state["best_step"] not in (None, state["step"])
        if kept and not evals[-1].get("eval_loss", math.nan) < state["best_loss"]:
            # the epochs after the best one made the model worse: go back to its weights
            _load_weights(checkpoints / BEST, model)
            run_eval()
        else:
            kept = False
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return LoopResult(
        state["step"],
        {
            "train_loss": last_loss,
            **evals[-1],
            "steps": state["step"],
            f"train_{unit}": state["units"],
            rate_key: (state["units"] - units_at_start) / elapsed if elapsed else 0.0,
            "train_examples": n_examples,
            **stop_record(args, state, _steps_per_epoch(n_examples, args), kept),
        },
    )


# ---- early stopping -----------------------------------------------------------------------

BEST = "best"  # checkpoints/best: the trainable weights of the epoch with the lowest eval loss
NO_BEST_YET = {
    "best_loss": None,
    "best_step": None,
    "best_epoch": None,
    "bad_epochs": 0,
    "stopped": False,
}


def _early_stopping(
    state: dict[str, Any], metrics: dict[str, float], patience: int, best: Path, model: Any
) -> None:
    """After an epoch's evaluation: keep the weights if the eval loss is the lowest so far,
    else count one more epoch without improvement and mark the run stopped at ``patience``.
    ``state`` goes into every checkpoint, so a resumed run stops where the straight one would."""
    from safetensors.torch import save_file

    loss = metrics.get("eval_loss", math.nan)
    if not math.isfinite(loss):
        return  # no validation data: nothing to stop on
    if state["best_loss"] is None or loss < state["best_loss"]:
        state.update(
            best_loss=loss, best_step=state["step"], best_epoch=state["epoch"], bad_epochs=0
        )
        weights = _training_weights(model)
        write_atomically(best, lambda d: save_file(weights, str(d / "weights.safetensors")))
    else:
        state["bad_epochs"] += 1
        state["stopped"] = state["bad_epochs"] >= patience


def _load_weights(directory: Path, model: Any) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(directory / "weights.safetensors")), strict=False)


def stop_record(
    args: TrainArgs, state: dict[str, Any], steps_per_epoch: int, kept: bool
) -> dict[str, Any]:
    """How a run ended, for its metrics: ``epochs_run`` (fractions when ``max_steps`` ended
    it inside an epoch), ``stop_reason`` (``patience``, ``max_steps`` or ``epochs``),
    ``best_epoch`` (with ``patience``) and ``stop_summary``, the sentence a person reads.

    >>> args = TrainArgs(epochs=20, patience=3)
    >>> state = {"epoch": 7, "batch": 0, "step": 70, "stopped": True, "best_epoch": 4,
    ...          "best_loss": 0.25}
    >>> print(stop_record(args, state, 10, kept=True)["stop_summary"])  # doctest: +NORMALIZE_WHITESPACE
    stopped after 7 of 20 epochs: validation loss did not improve for 3 epochs; kept the
    weights of epoch 4 (lowest validation loss, 0.250)
    >>> stop_record(TrainArgs(epochs=2), {"epoch": 2, "batch": 0, "step": 20, "stopped": False,
    ...             "best_epoch": None}, 10, kept=False)["stop_summary"]
    'ran all 2 epochs'
    >>> stop_record(TrainArgs(max_steps=15), {"epoch": 1, "batch": 5, "step": 15,
    ...             "stopped": False, "best_epoch": None}, 10, kept=False)["stop_summary"]
    'reached train.max_steps=15 after 1.5 epochs'
    """
    epochs_run = round(state["epoch"] + state["batch"] / steps_per_epoch, 2)
    if state["stopped"]:
        reason = "patience"
        ran = (
            f"{_count(epochs_run, 'epoch')} (train.max_steps={args.max_steps})"
            if args.max_steps
            else f"{epochs_run:g} of {_count(args.epochs, 'epoch')}"
        )
        summary = (
            f"stopped after {ran}: validation loss did not improve for "
            f"{_count(args.patience, 'epoch')}"
        )
    elif args.max_steps:
        reason = "max_steps"
        summary = f"reached train.max_steps={args.max_steps} after {_count(epochs_run, 'epoch')}"
    else:
        reason = "epochs"
        summary = f"ran all {args.epochs} epochs" if args.epochs > 1 else "ran its one epoch"
    if kept:
        summary += (
            f"; kept the weights of epoch {state['best_epoch']} "
            f"(lowest validation loss, {state['best_loss']:.3f})"
        )
    record: dict[str, Any] = {"epochs_run": epochs_run, "stop_reason": reason}
    if args.patience:
        record["best_epoch"] = state["best_epoch"]
    return {**record, "stop_summary": summary}


def _steps_per_epoch(n: int, args: TrainArgs) -> int:
    return planned_steps(n, replace(args, epochs=1, max_steps=0))


def _count(n: float, noun: str) -> str:
    """``n`` with ``noun`` in the singular or the plural: ``1 epoch``, ``2.5 epochs``."""
    return f"{n:g} {noun}" if n == 1 else f"{n:g} {noun}s"


# ---- checkpoints --------------------------------------------------------------------------


def latest_checkpoint(checkpoints: Path) -> Path | None:
    if not checkpoints.is_dir():
        return None
    done = [
        p
        for p in checkpoints.iterdir()
        if p.name.startswith("step-") and (p / "state.json").exists()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _training_weights(model: Any) -> dict[str, Any]:
    """What changes during training: trainable parameters, and buffers (batch-norm statistics)."""
    weights = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    weights.update({n: b.detach() for n, b in model.named_buffers() if b is not None})
    return {n: t.contiguous() for n, t in weights.items()}


def _save_checkpoint(
    checkpoints: Path, state: dict, model: Any, optimizer: Any, scheduler: Any
) -> None:
    """Everything exact resume needs, written to a temp dir and renamed into place."""
    import torch
    from safetensors.torch import save_file

    def write(directory: Path) -> None:
        save_file(_training_weights(model), str(directory / "weights.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            directory / "training_state.pt",
        )
        (directory / "state.json").write_text(json.dumps(state))

    write_atomically(checkpoints / f"step-{state['step']:06d}", write)
    for old in sorted(p for p in checkpoints.iterdir() if p.name.startswith("step-"))[:-2]:
        shutil.rmtree(old)  # keep the last two


def _load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict:
    import torch
    from safetensors.torch import load_file

    saved_weights = load_file(str(path / "weights.safetensors"))
    expected = _training_weights(model)
    if saved_weights.keys() != expected.keys():
        raise TrainingError(
            f"{path} was written for a different model or config; delete {path.parent} "
            "to start over, or pass the config that wrote it"
        )
    model.load_state_dict(saved_weights, strict=False)
    saved = torch.load(path / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    return json.loads((path / "state.json").read_text())


# ---- the end of a recipe ------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a recipe returns: the saved artifact's folder (the run folder when the run stopped
    early, before saving), the optimizer steps taken and the final metrics."""

    model_dir: Path
    steps: int
    metrics: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        """The text recipe's name for its artifact: a LoRA adapter folder."""
        return self.model_dir


def finish(
    loop: LoopResult,
    output_dir: Path,
    target: Path,
    write: Callable[[Path], None],
    manifest: Manifest,
    *,
    metrics: dict[str, Any],
    steps: int | None = None,
) -> TrainResult:
    """Every recipe's last step: unless the run stopped early, save the artifact into
    ``target`` (``write`` fills its folder; the manifest carries ``metrics``); then say what
    came out. ``steps``: the run's steps when it had more than this loop (default the loop's)."""
    steps = loop.steps if steps is None else steps
    if loop.stopped_early:
        return TrainResult(output_dir, steps, loop.metrics)
    save_artifact(target, write, replace(manifest, metrics=metrics))
    return TrainResult(target, steps, metrics)
