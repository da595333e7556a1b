"""Recipe: the composed vision-language model (``task: assess``), trained in two stages.

1. **align**: the projector learns to speak the frozen decoder's language — photo -> a short
   caption of its damages ("moderate dent on front_bumper").
2. **instruct**: LoRA on the decoder, with the projector still training unless
   ``instruct_projector: false`` — photo + instruction
   -> the Assessment's photo fields as compact JSON (:func:`finetune.vision_data.assessment_target`).

The encoder is a trained tunegraph image model (by default the damage model of
``configs/vision/damage_quick.yaml``), frozen in both stages, so its features are computed once.
Both stages run through :func:`finetune.trainer.train_loop` (checkpoints, exact resume,
progress, metrics), each in its own folder under the run directory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune.config import to_dict
from finetune.recipes.image_classifier import VisionDataArgs
from finetune.trainer import (
    LoraArgs,
    TrainArgs,
    TrainingError,
    autocast,
    require_cuda_for_nf4,
    save_artifact,
    train_loop,
    visited,
)
from finetune.vision_data import assessment_target

CAPTION_INSTRUCTION = "List the damage in this photo."


@dataclass
class VisionLMConfig:
    task: Literal["assess"] = "assess"
    name: str = "damage-vlm"
    base_model: str = "smollm2-135m-instruct"  # the decoder: embedded name, folder or hub id
    # a trained tunegraph image model: a folder, or a name under TUNEGRAPH_HOME/vision
    encoder: str = "damage-model"
    # visual tokens per photo: rows x columns of feature cells, and one for the whole photo
    grid: tuple[int, int] = (2, 2)
    instruction: str = "Assess the damage. Answer in JSON."
    # Instead of the composed model: a folder or hub id of any AutoModelForImageTextToText
    # (LLaVA-1.5, Llama 3.2 Vision, Qwen2-VL, SmolVLM, Llama 4), LoRA on its language model
    # (finetune/recipes/image_text_lora.py); QLoRA with train.quantization=nf4 on CUDA.
    hf_model: str = ""
    # False: the instruct stage trains LoRA only, with the projector as the align stage left it;
    # with lora.last_layers=N the backward pass then stops below those N layers (much faster)
    instruct_projector: bool = True
    # N > 0: keep only the decoder's first N layers (its norm and head stay): each token then
    # costs about N / all of the layers' compute in both stages and at inference. The answer is
    # a short JSON over a closed vocabulary, constrained by a grammar, so a shallow decoder can
    # write it; the layer count is saved with the model and applied again when it loads.
    decoder_layers: int = 0
    # True: LoRA trains in the align stage too (the instruct stage goes on with the same
    # adapter). A decoder cut by decoder_layers cannot caption with its frozen layers alone, so
    # the projector cannot align to it without this.
    align_lora: bool = False
    # True (a damage model as the encoder): the visual tokens also carry the damage head's
    # presence and severity probabilities (see finetune.vision_lm.ImageEncoder)
    head_scores: bool = False
    # True (a damage model as the encoder): the prompt also carries the damage model's
    # detections in words after the visual tokens ("Damage model: minor dent on hood"), as
    # Oscar-style models read object tags; the instruct stage reads them, the align stage does
    # not (its captions would be copied from them, and the projector would learn nothing)
    tags: bool = False
    # N > 0: each stage's eval loss on the first N validation photos only (0: all of them)
    val_examples: int = 0
    lora: LoraArgs = field(default_factory=LoraArgs)
    align: TrainArgs = field(
        default_factory=lambda: TrainArgs(lr=1e-3, batch_size=16, max_length=128)
    )
    train: TrainArgs = field(
        default_factory=lambda: TrainArgs(lr=1e-3, batch_size=16, max_length=256)
    )
    data: VisionDataArgs = field(default_factory=VisionDataArgs)

    def __post_init__(self) -> None:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid={list(self.grid)}: give [rows, columns], each >= 1")
        if self.decoder_layers < 0:
            raise ValueError(f"decoder_layers={self.decoder_layers}: use 0 (all) or a count")
        if self.val_examples < 0:
            raise ValueError(f"val_examples={self.val_examples}: use 0 (all) or a count")


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    metrics: dict[str, Any]


def caption(example: Any) -> str:
    """The align stage's target: the photo's damages in words.

    >>> from ingest.coco import DamageAnnotation as A, DamageExample
    >>> dents = (A("dent", (0, 0, 1, 1), "hood", "minor"), A("crack", (0, 0, 1, 1), "headlamp"))
    >>> caption(DamageExample(1, "p.png", 10, 10, dents))
    'minor dent on hood; moderate crack on headlamp'
    """
    target = assessment_target(example)
    return (
        "; ".join(f"{d['severity']} {d['type']} on {d['part']}" for d in target["damages"])
        or "no damage"
    )


def answer_text(example: Any) -> str:
    """The instruct stage's target: the Assessment's photo fields as compact JSON."""
    return json.dumps(assessment_target(example), separators=(",", ":"))


def run(
    config: VisionLMConfig,
    decoder: Any,
    tokenizer: Any,
    encoder_dir: Path,
    train: Sequence[tuple[Any, Any]],
    val: Sequence[tuple[Any, Any]],
    output_dir: Path,
    *,
    data_hash: str,
    model_dir: Path | None = None,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train on ``(PIL image, DamageExample)`` pairs. ``decoder``/``tokenizer``: the base causal
    LM; ``encoder_dir``: the trained image model. The model goes to ``model_dir`` (default
    ``output_dir/model``); checkpoints and metrics to ``output_dir/align`` and
    ``output_dir/instruct``. ``stop_after_steps`` (counted within the instruct stage) ends the
    run early after a checkpoint (used to test resume)."""
    import torch
    from peft import get_peft_model

    from finetune.vision_lm import ComposedVLM, ImageEncoder, VisionLMError, keep_first_layers

    require_cuda_for_nf4(config.train)
    torch.manual_seed(config.train.seed)
    try:
        encoder = ImageEncoder.load(encoder_dir, config.grid, config.head_scores, config.tags)
    except VisionLMError as exc:
        raise TrainingError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"encoder={str(encoder_dir)!r}: {exc}; train the damage model first "
            "(`tunegraph finetune vision --config configs/vision/damage_quick.yaml`)"
        ) from None
    decoder.config.use_cache = False
    if config.decoder_layers:
        try:
            keep_first_layers(decoder, config.decoder_layers)
        except VisionLMError as exc:
            raise TrainingError(str(exc)) from None
    vlm = ComposedVLM(decoder, tokenizer, encoder.dim, encoder.cells)
    vlm.decoder.requires_grad_(False)
    if config.val_examples:
        val = val[: config.val_examples]
    # only the photos the two stages' steps reach are encoded (the quick profile's 45 steps reach
    # 192 of the demo's 2,160: both stages walk the same seeded order); the others keep zero
    # features and are never read
    used = sorted(set(visited(len(train), config.align)) | set(visited(len(train), config.train)))
    used_features, used_tags = encoder.read([train[i][0] for i in used], progress=progress)
    train_features = torch.zeros((len(train), *used_features.shape[1:]))
    train_features[used] = used_features
    train_tags = [""] * len(train)
    for i, tags in zip(used, used_tags, strict=True):
        train_tags[i] = tags
    val_features, val_tags = encoder.read([p for p, _ in val], progress=progress)
    examples = [e for _, e in train]
    val_examples = [e for _, e in val]

    def with_lora(decoder: Any) -> Any:
        return get_peft_model(
            decoder,
            config.lora.peft_config(
                task_type="CAUSAL_LM",
                layers_to_transform=config.lora.layers(decoder.config.num_hidden_layers),
            ),
        )

    # stage 1: the projector (and LoRA with align_lora), decoder frozen
    if config.align_lora:
        vlm.decoder = with_lora(decoder)
    align = _stage(
        vlm,
        config.align,
        train_features,
        val_features,
        [vlm.answer_ids(caption(e)) for e in examples],
        [vlm.answer_ids(caption(e)) for e in val_examples],
        vlm.prompt(CAPTION_INSTRUCTION),
        output_dir / "align",
        resume=resume,
        progress=progress,
        desc="align (projector + LoRA)" if config.align_lora else "align (projector)",
    )
    # stage 2: LoRA on the decoder (+ the projector unless instruct_projector is off)
    vlm.projector.requires_grad_(config.instruct_projector)
    if not config.align_lora:
        vlm.decoder = with_lora(decoder)
    instruct = _stage(
        vlm,
        config.train,
        train_features,
        val_features,
        [vlm.answer_ids(answer_text(e)) for e in examples],
        [vlm.answer_ids(answer_text(e)) for e in val_examples],
        vlm.prompt(config.instruction),
        output_dir / "instruct",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
        desc="instruct (LoRA)",
        tags=[vlm.tag_ids(t) for t in train_tags] if config.tags else None,
        val_tags=[vlm.tag_ids(t) for t in val_tags] if config.tags else None,
    )
    if instruct.stopped_early:
        return TrainResult(output_dir, align.steps + instruct.steps, instruct.metrics)
    metrics = {
        "align": align.metrics,
        **instruct.metrics,
        "steps": align.steps + instruct.steps,
        "val_examples": len(val),
    }
    target = model_dir or output_dir / "model"
    layout = {
        "base_model": config.base_model,
        "grid": list(config.grid),
        "cells": vlm.cells,
        "feature_dim": encoder.dim,
        "instruction": config.instruction,
        "decoder_layers": config.decoder_layers,
        "head_scores": config.head_scores,
        "tags": config.tags,
    }

    def write(directory: Path) -> None:
        from safetensors.torch import save_file

        shutil.copytree(encoder_dir, directory / "encoder")
        save_file(
            {k: v.contiguous() for k, v in vlm.projector.state_dict().items()},
            directory / "projector.safetensors",
        )
        vlm.decoder.save_pretrained(directory / "adapter")
        tokenizer.save_pretrained(directory / "adapter")  # the chat template travels along
        (directory / "vlm.json").write_text(json.dumps(layout, indent=2))

    save_artifact(
        target,
        write,
        {
            "kind": "vision-language-model",
            "base_model": config.base_model,
            "encoder": str(encoder_dir),
            "data_sha256": data_hash,
            "config": to_dict(config),
            "metrics": metrics,
        },
    )
    return TrainResult(target, metrics["steps"], metrics)


def length_groups(batch: list[int], answers: Sequence[Sequence[int]], groups: int = 2):
    """``batch`` ordered by answer length and cut into ``groups`` runs, each padded only to its
    own longest answer (the loss is a sum over answers, so it is the same in one piece).

    >>> length_groups([0, 1, 2, 3], [[1] * 9, [1], [1] * 5, [1] * 2])
    [[1, 3], [2, 0]]
    """
    ordered = sorted(batch, key=lambda i: len(answers[i]))
    size = -(-len(ordered) // groups)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _stage(
    vlm: Any,
    args: TrainArgs,
    train_features: Any,
    val_features: Any,
    train_answers: list[list[int]],
    val_answers: list[list[int]],
    prompt: tuple[list[int], list[int]],
    output_dir: Path,
    *,
    resume: bool,
    progress: Callable[..., Any] | None,
    desc: str,
    stop_after_steps: int | None = None,
    tags: list[list[int]] | None = None,
    val_tags: list[list[int]] | None = None,
) -> Any:
    """One training stage over precomputed features; the loss is on answer tokens only.
    ``tags``/``val_tags``: each example's tag tokens (:meth:`ComposedVLM.tag_ids`), or None."""
    import torch

    prefix = len(prompt[0]) + vlm.cells + len(prompt[1])
    tag_lengths = [len(t) for t in tags] if tags else [0] * len(train_answers)
    longest = prefix + max(t + len(a) for t, a in zip(tag_lengths, train_answers, strict=True))
    if longest > args.max_length:
        raise TrainingError(
            f"an example takes {longest} tokens (prompt, {vlm.cells} visual tokens, tags and "
            f"answer), more than max_length={args.max_length} of this stage: raise it"
        )
    device = next(vlm.projector.parameters()).device

    def rows(source: list[list[int]] | None, indices: Sequence[int]) -> Any:
        return [source[i] for i in indices] if source else None

    def step(group: list[list[int]]) -> tuple[float, int]:
        label_tokens = sum(len(train_answers[i]) for b in group for i in b)
        total, seen = 0.0, 0
        for batch in (part for b in group for part in length_groups(b, train_answers)):
            answers = [train_answers[i] for i in batch]
            with autocast(args.precision, device):
                embeds, attention, labels = vlm.inputs(
                    train_features[batch], prompt, answers, rows(tags, batch)
                )
                loss = vlm.loss_sum(embeds, attention, labels)
            (loss / label_tokens).backward()
            total += loss.item() / label_tokens
            seen += sum(prefix + tag_lengths[i] + len(train_answers[i]) for i in batch)
        return total, seen

    def evaluate() -> dict[str, float]:
        if not val_answers:
            return {"eval_loss": float("nan")}
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(val_answers), args.batch_size):
                answers = val_answers[start : start + args.batch_size]
                batch = range(start, start + len(answers))
                with autocast(args.precision, device):
                    inputs = vlm.inputs(
                        val_features[start : start + len(answers)],
                        prompt,
                        answers,
                        rows(val_tags, batch),
                    )
                    total += vlm.loss_sum(*inputs).item()
                count += sum(len(a) for a in answers)
        return {"eval_loss": total / count}

    return train_loop(
        args,
        vlm,
        len(train_answers),
        step,
        evaluate,
        output_dir,
        unit="tokens",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
        desc=desc,
    )
