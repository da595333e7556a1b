"""Image classifiers: the damage model (the agentic approach's vision tool) and plain
classification (one label per image).

Any ``AutoModelForImageClassification`` backbone works: a hub id or a local path gets a new head
and LoRA on ``lora.target_modules`` (the head is trained in full); ``backbone: scratch-resnet``
(the CPU default) builds a small ResNet with random weights and trains all of it.

- ``task: damage`` -- multi-label over the taxonomy's (part, damage type) pairs; for each pair a
  presence logit, three severity logits and a box (x, y, w, h as fractions of the image). Loss:
  binary cross-entropy on presence, cross-entropy on severity and L1 on the box where the pair is
  present.
- ``task: classify`` -- softmax over the classes of the training data.

Lifecycle: :func:`main` reads the data (:func:`finetune.vision_datasets.training_data`), then
:func:`run` sets up the model -> :func:`finetune.trainer.train_loop` -> save (the model with
LoRA merged, ``labels.json``, manifest).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.artifact import Manifest
from finetune.config import to_dict
from finetune.recipes.vision_run import VisionRun, announce
from finetune.trainer import (
    LoraArgs,
    TrainArgs,
    TrainingError,
    TrainResult,
    autocast,
    finish,
    train_loop,
)
from finetune.vision_data import (
    MEAN,
    STD,
    DamageLabels,
    crop_boxes,
    image_tensor,
    split_damage_logits,
)
from finetune.vision_datasets import VisionDataArgs, training_data

if TYPE_CHECKING:
    from finetune.workspace import Workspace

SCRATCH = "scratch-resnet"
SEVERITY_WEIGHT = 0.5
BOX_WEIGHT = 1.0


@dataclass
class ImageArgs:
    width: int = 192
    height: int = 144
    augment: bool = True

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image.width={self.width} and image.height={self.height}: >= 32")


@dataclass
class ScratchArgs:
    """The from-scratch ResNet (``backbone: scratch-resnet``)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 1, 2, 1)

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError("scratch.widths and scratch.depths need the same number of stages")


@dataclass
class ImageClassifierConfig:
    task: Literal["damage", "classify"] = "damage"
    backbone: str = SCRATCH
    name: str = "damage-model"
    threshold: float = 0.5  # damage: a pair is present above this probability
    image: ImageArgs = field(default_factory=ImageArgs)
    scratch: ScratchArgs = field(default_factory=ScratchArgs)
    lora: LoraArgs = field(default_factory=lambda: LoraArgs(target_modules=("query", "value")))
    train: TrainArgs = field(default_factory=lambda: TrainArgs(lr=1e-3, batch_size=16))
    data: VisionDataArgs = field(default_factory=VisionDataArgs)


@dataclass(frozen=True)
class Sample:
    """One training image: its decoded picture (downscaled for the cache) and its targets."""

    picture: Any
    targets: dict[str, Any]


def head_size(task: str, classes: Sequence[str]) -> int:
    if task == "damage":
        return len(DamageLabels().pairs) * 8
    return len(classes)


def build_model(config: ImageClassifierConfig, n_outputs: int) -> tuple[Any, dict[str, Any]]:
    """The model to train and its preprocessing (size, mean, std)."""
    from transformers import AutoModelForImageClassification, ResNetConfig

    preprocessing = {
        "width": config.image.width,
        "height": config.image.height,
        "mean": list(MEAN),
        "std": list(STD),
    }
    if config.backbone == SCRATCH:
        from transformers import ResNetForImageClassification

        resnet = ResNetConfig(
            num_channels=3,
            embedding_size=config.scratch.widths[0],
            hidden_sizes=list(config.scratch.widths),
            depths=list(config.scratch.depths),
            layer_type="basic",
            num_labels=n_outputs,
        )
        return ResNetForImageClassification(resnet), preprocessing
    local = Path(config.backbone).expanduser()
    if config.backbone.startswith((".", "/", "~")) and not local.is_dir():
        raise TrainingError(
            f"backbone={config.backbone!r}: no such folder; give the folder of a saved "
            f"AutoModelForImageClassification, a hub id, or {SCRATCH}"
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(
            config.backbone, num_labels=n_outputs, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"backbone={config.backbone!r} is not an image-classification model tunegraph can "
            f"load ({str(exc).splitlines()[0]}); use {SCRATCH} or a local path / hub id of an "
            "AutoModelForImageClassification"
        ) from None
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(config.backbone)
        preprocessing["mean"] = list(getattr(processor, "image_mean", MEAN))
        preprocessing["std"] = list(getattr(processor, "image_std", STD))
    except (OSError, ValueError):
        pass  # no processor saved with the backbone: keep tunegraph's normalisation
    from peft import get_peft_model

    head = [n for n in ("classifier", "fc", "head") if hasattr(model, n)]
    model = get_peft_model(model, config.lora.peft_config(modules_to_save=head))
    return model, preprocessing


def damage_loss(logits: Any, targets: dict[str, Any]) -> Any:
    """Presence BCE + severity CE + box L1 (the last two where the pair is present)."""
    import torch
    import torch.nn.functional as F

    pairs = targets["presence"].shape[1]
    presence, severity, boxes = split_damage_logits(logits, pairs)
    # summed over pairs: with ~2 damages among 31 pairs a mean would drown the positives
    loss = F.binary_cross_entropy_with_logits(presence, targets["presence"], reduction="sum")
    loss = loss / presence.shape[0]
    present = targets["presence"] > 0.5
    if present.any():
        loss = loss + SEVERITY_WEIGHT * F.cross_entropy(
            severity[present], targets["severity"][present]
        )
        loss = loss + BOX_WEIGHT * F.l1_loss(
            torch.sigmoid(boxes[present]), targets["boxes"][present]
        )
    return loss


def main(
    config: ImageClassifierConfig,
    workspace: Workspace,
    *,
    out: Path | None = None,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> VisionRun:
    """The recipe from start to end: read ``config.data`` (the demo corpus of
    ``workspace.demo_dir`` by default), train with checkpoints and metrics in
    ``workspace.runs_dir/NAME``, save the model to ``out`` (default ``workspace.vision_dir/NAME``).

    ``progress``: a tqdm-like bar factory; ``log``: where the lines for a person go (the data
    counts, the first items left out, the precision). Raises
    :class:`~finetune.vision_datasets.VisionDataError` or :class:`TrainingError`, each naming
    what to change.
    """
    data = training_data(config.task, config.data, workspace.demo_dir, progress)
    announce(log, data, [config.train.precision], rejected_lines=10)
    run_dir = workspace.runs_dir / config.name
    result = run(
        config,
        data.train,
        data.val,
        run_dir,
        data_hash=data.data_hash,
        model_dir=out or workspace.vision_dir / config.name,
        resume=resume,
        progress=progress,
    )
    m = result.metrics
    headline = (
        f"{m.get('steps')} steps, train loss {m.get('train_loss', 0):.3f}, eval loss "
        f"{m.get('eval_loss', 0):.3f}, {m.get('images_per_s', 0):.0f} images/s\n"
        f"{m.get('stop_summary', '')}"  # how many epochs ran, and why it stopped there
    )
    return VisionRun(run_dir, result, data.rejected, headline)


def run(
    config: ImageClassifierConfig,
    train: Sequence[tuple[Any, Any]],
    val: Sequence[tuple[Any, Any]],
    output_dir: Path,
    *,
    classes: Sequence[str] = (),
    data_hash: str,
    model_dir: Path | None = None,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train on ``(PIL image, target)`` pairs: a ``DamageExample`` for ``task: damage``, a class
    label for ``task: classify``. The model goes to ``model_dir`` (default
    ``output_dir/model``), checkpoints and ``metrics.jsonl`` to ``output_dir``."""
    import torch

    args = config.train
    if args.quantization != "none":
        raise TrainingError(
            "train.quantization: image classifiers train in full precision; use none"
        )
    if config.task == "classify":
        classes = sorted(set(classes) or {label for _, label in train})
        if len(classes) < 2:
            raise TrainingError("classification needs at least two classes in the training data")
        unknown = sorted({label for _, label in val} - set(classes))
        if unknown:
            raise TrainingError(f"validation labels not in the training data: {unknown}")
    torch.manual_seed(args.seed)
    model, preprocessing = build_model(config, head_size(config.task, classes))
    device = next(model.parameters()).device
    # channels-last convolutions: faster under bf16 autocast on CPUs with AVX512-BF16/AMX and in
    # fp32 (python benchmarks/memory_format.py: 0.84x channels-first's step time on an AVX2 CPU)
    memory_format = torch.channels_last
    model = model.to(memory_format=memory_format)
    size = (preprocessing["width"], preprocessing["height"])
    labels = DamageLabels()
    train_samples = [_sample(p, t, config.task, classes, labels, size) for p, t in train]
    val_samples = [_sample(p, t, config.task, classes, labels, size) for p, t in val]
    mean, std = preprocessing["mean"], preprocessing["std"]

    def batch(samples: Sequence[Sample], augment: bool) -> tuple[Any, dict[str, Any]]:
        pixels, targets = [], []
        for sample in samples:
            # the global `random` is in the checkpoint, so augmentation replays on resume
            tensor, crop = image_tensor(
                sample.picture, size, random if augment else None, mean=mean, std=std
            )
            pixels.append(tensor)
            target = dict(sample.targets)
            if config.task == "damage" and augment:
                target["boxes"] = crop_boxes(target["boxes"], crop)
            targets.append(target)
        stacked = {key: torch.tensor([t[key] for t in targets]) for key in targets[0]}
        return torch.stack(pixels).contiguous(memory_format=memory_format), stacked

    def loss_of(pixels: Any, targets: dict[str, Any]) -> Any:
        with autocast(args.precision, device):
            logits = model(pixel_values=pixels).logits.float()
        if config.task == "damage":
            return damage_loss(logits, targets)
        return torch.nn.functional.cross_entropy(logits, targets["label"])

    def step(group: list[list[int]]) -> tuple[float, int]:
        total, seen = 0.0, 0
        for indices in group:
            pixels, targets = batch([train_samples[i] for i in indices], config.image.augment)
            loss = loss_of(pixels, targets) * len(indices) / sum(len(b) for b in group)
            loss.backward()
            total += loss.item()
            seen += len(indices)
        return total, seen

    def evaluate() -> dict[str, float]:
        if not val_samples:
            return {"eval_loss": float("nan")}
        total = 0.0
        for start in range(0, len(val_samples), args.batch_size):
            chunk = val_samples[start : start + args.batch_size]
            pixels, targets = batch(chunk, augment=False)
            total += loss_of(pixels, targets).item() * len(chunk)
        return {"eval_loss": total / len(val_samples)}

    loop = train_loop(
        args,
        model,
        len(train_samples),
        step,
        evaluate,
        output_dir,
        unit="images",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
        desc=f"train {config.task}",
    )
    head = {
        "task": config.task,
        "labels": labels.names if config.task == "damage" else list(classes),
        "threshold": config.threshold,
        **preprocessing,
    }

    def write(directory: Path) -> None:
        final = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        final.to(memory_format=torch.contiguous_format).save_pretrained(directory)
        (directory / "labels.json").write_text(json.dumps(head, indent=2))

    return finish(
        loop,
        output_dir,
        model_dir or output_dir / "model",
        write,
        Manifest(f"image-classifier-{config.task}", config.backbone, data_hash, to_dict(config)),
        metrics={**loop.metrics, "val_examples": len(val_samples)},
    )


def _sample(
    picture: Any,
    target: Any,
    task: str,
    classes: Sequence[str],
    labels: DamageLabels,
    size: tuple[int, int],
) -> Sample:
    # Cache a copy a little larger than the model input: crops still have pixels to spare,
    # and a big dataset of phone photos does not fill memory.
    cached = picture.copy()
    cached.thumbnail((round(size[0] * 1.25), round(size[1] * 1.25)))
    if task == "damage":
        return Sample(cached, labels.targets(target))
    return Sample(cached, {"label": list(classes).index(target)})
