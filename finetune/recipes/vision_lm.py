"""Recipe: the composed vision-language model (``task: assess``), trained in two stages.

1. **align**: the projector learns to speak the frozen decoder's language — photo -> a short
   caption of its damages ("moderate dent on front_bumper").
2. **instruct**: LoRA on the decoder, with the projector still training unless
   ``instruct_projector: false`` — photo + instruction
   -> the Assessment's photo fields as compact JSON (:func:`finetune.vision_data.assessment_target`).

The encoder is a trained tunegraph image model (by default the damage model of
``configs/vision/damage_quick.yaml``), frozen in both stages, so its features are computed once.
Both stages run through :func:`finetune.trainer.train_loop` (checkpoints, exact resume,
progress, metrics), each in its own folder under the run directory. :func:`main` reads the data
and the decoder, then trains this model with :func:`run`, or LoRA on ``hf_model`` when it is set
(``image_text_lora.py``). With ``train.quantization`` nf4 or int8 the decoder loads through
bitsandbytes for both stages (QLoRA: useful with a larger ``base_model`` than SmolLM2-135M); the
adapter and projector it saves load on the full-precision decoder, as the assessor runs it.

Over 400 lines on purpose: the two stages' step and eval functions and their target helpers (word
ids, free tokens, length groups) are this recipe's own and sit beside :func:`run`, which wires them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.artifact import Manifest
from finetune.config import to_dict
from finetune.quantization import prepare_for_training, require_quantization
from finetune.recipes.image_text_lora import run as run_image_text_lora
from finetune.recipes.vision_lm_config import VisionLMConfig
from finetune.recipes.vision_run import VisionRun, announce
from finetune.trainer import (
    TrainArgs,
    TrainingError,
    TrainResult,
    autocast,
    finish,
    train_loop,
    visited,
)
from finetune.vision_data import answer_text, caption, cell_words
from finetune.vision_datasets import damage_data

if TYPE_CHECKING:
    from finetune.workspace import Workspace

CAPTION_INSTRUCTION = "List the damage in this photo."
OWN = "own"  # encoder: own — the recipe trains its own image encoder first
WORD_NEGATIVES = 8192  # align_target words: other words in each step's softmax (of ~49k)
MAX_SIDE = 512  # the encoder reads small images: the photos are kept in memory this small


def main(
    config: VisionLMConfig,
    workspace: Workspace,
    *,
    out: Path | None = None,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> VisionRun:
    """The recipe from start to end: read ``config.data`` (the demo corpus of
    ``workspace.demo_dir`` by default) and the decoder (``workspace.models``), train with
    checkpoints and metrics in ``workspace.runs_dir/NAME``, save the model to ``out`` (default
    ``workspace.vision_dir/NAME``). With ``config.hf_model`` set, LoRA on that model instead
    (:func:`finetune.recipes.image_text_lora.run`).

    ``config.encoder``: a folder, or a model's name under ``workspace.vision_dir``.
    ``progress``: a tqdm-like bar factory; ``log``: where the lines for a person go (the data
    counts, the precision). Raises :class:`~finetune.vision_datasets.VisionDataError`,
    ``ModelNotFoundError`` or :class:`TrainingError`, each naming what to change.
    """
    data = damage_data(config.data, workspace.demo_dir, progress, max_side=MAX_SIDE)
    decoder = (
        None
        if config.hf_model
        else workspace.models.load_causal_lm(config.base_model, config.train.quantization)
    )
    announce(log, data, [config.align.precision, config.train.precision])
    run_dir = workspace.runs_dir / config.name
    common: dict[str, Any] = {
        "data_hash": data.data_hash,
        "model_dir": out or workspace.vision_dir / config.name,
        "resume": resume,
        "progress": progress,
    }
    if decoder is None:
        result = run_image_text_lora(config, data.train, data.val, run_dir, **common)
    else:
        if config.encoder == OWN:
            encoder = own_encoder(config, data, run_dir, resume=resume, progress=progress)
        else:
            encoder = Path(config.encoder).expanduser()
            if not encoder.is_dir():
                encoder = workspace.vision_dir / config.encoder
        result = run(config, *decoder, encoder, data.train, data.val, run_dir, **common)
    m = result.metrics
    headline = (
        f"{m.get('steps')} steps, eval loss {m.get('eval_loss', 0):.3f}, "
        f"{m.get('tokens_per_s', 0):.0f} tokens/s"
    )
    if m.get("stop_summary"):  # how the instruct stage ended (issue 25: every short form says)
        headline += f"\n{m['stop_summary']}"
    return VisionRun(run_dir, result, data.rejected, headline)


def own_encoder(
    config: VisionLMConfig,
    data: Any,
    run_dir: Path,
    *,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
) -> Path:
    """``encoder: own``: the first stage trains the model's own image encoder with the
    image-classifier recipe (``config.own_encoder``) on the same training and validation photos,
    checkpoints in ``run_dir/encoder``; returns the folder of the trained encoder, which the
    saved model copies (it depends on no other model's folder)."""
    from finetune.recipes.image_classifier import run as run_image_classifier

    stage_dir = run_dir / "encoder"
    run_image_classifier(
        config.own_encoder,
        data.train,
        data.val,
        stage_dir,
        data_hash=data.data_hash,
        model_dir=stage_dir / "model",
        resume=resume,
        progress=progress,
    )
    return stage_dir / "model"


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

    if config.align.quantization != "none":
        raise TrainingError(
            f"align.quantization={config.align.quantization}: both stages train on one decoder, "
            "loaded as train.quantization says; set train.quantization instead and leave "
            "align.quantization at none"
        )
    require_quantization(
        decoder,
        config.train.quantization,
        loader=f"ModelStore.load_causal_lm(name, {config.train.quantization!r})",
    )
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
    if config.train.quantization != "none":  # QLoRA: the 4/8-bit decoder, frozen; LoRA on top
        decoder = prepare_for_training(decoder)
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
    if config.align_target == "words":
        vlm.visual_norm = vlm.word_embedding_norm()
        align = _word_stage(
            vlm,
            config.align,
            train_features,
            val_features,
            [word_ids(tokenizer, cell_words(e, config.grid)) for e in examples],
            [word_ids(tokenizer, cell_words(e, config.grid)) for e in val_examples],
            output_dir / "align",
            resume=resume,
            progress=progress,
        )
    else:
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
    train_answers = [vlm.answer_ids(answer_text(e)) for e in examples]
    val_answers = [vlm.answer_ids(answer_text(e)) for e in val_examples]
    learn = val_learn = None
    if config.instruct_loss == "free":
        steps = visited(len(train), config.train)
        learn = free_tokens(vlm, train_answers, steps)
        val_learn = free_tokens(vlm, val_answers, range(len(val_answers)))
    instruct = _stage(
        vlm,
        config.train,
        train_features,
        val_features,
        train_answers,
        val_answers,
        vlm.prompt(config.instruction),
        output_dir / "instruct",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
        desc="instruct (LoRA)",
        tags=[vlm.tag_ids(t) for t in train_tags] if config.tags else None,
        val_tags=[vlm.tag_ids(t) for t in val_tags] if config.tags else None,
        learn=learn,
        val_learn=val_learn,
    )
    metrics = {
        "align": align.metrics,
        **instruct.metrics,
        "steps": align.steps + instruct.steps,
        "val_examples": len(val),
    }
    layout = {
        "base_model": config.base_model,
        "grid": list(config.grid),
        "cells": vlm.cells,
        "feature_dim": encoder.dim,
        "instruction": config.instruction,
        "decoder_layers": config.decoder_layers,
        "head_scores": config.head_scores,
        "tags": config.tags,
        "visual_norm": vlm.visual_norm,
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

    return finish(
        instruct,
        output_dir,
        model_dir or output_dir / "model",
        write,
        Manifest(
            "vision-language-model",
            config.base_model,
            data_hash,
            to_dict(config),
            extra={"encoder": OWN if config.encoder == OWN else str(encoder_dir)},
        ),
        metrics=metrics,
        steps=metrics["steps"],
    )


def free_tokens(vlm: Any, answers: Sequence[list[int]], indices: Iterable[int]) -> list[list[bool]]:
    """``instruct_loss: free``: for each answer (those at ``indices``; the others learn from
    every token, and no step reaches them), which tokens the answer grammar leaves free
    (:func:`~finetune.constrained.free_positions`)."""
    from finetune.constrained import free_positions, json_grammar, ll_tokenizer
    from finetune.vision_lm.model import answer_schema

    grammar = json_grammar(answer_schema())
    ll_tok = ll_tokenizer(vlm.tokenizer, vlm.eos_id)
    learn = [[True] * len(a) for a in answers]
    for i in indices:
        free = free_positions(ll_tok, grammar, answers[i])
        if free is None:
            raise TrainingError(
                f"training answer {i} leaves the answer grammar; set instruct_loss: all"
            )
        if not any(free):
            raise TrainingError(
                f"training answer {i}: the answer grammar forces every token, nothing to learn; "
                "set instruct_loss: all"
            )
        learn[i] = free
    return learn


def word_ids(tokenizer: Any, cells: Sequence[Sequence[str]]) -> list[list[int]]:
    """Each cell's words (:func:`~finetune.vision_data.cell_words`) as the decoder's token ids,
    without separators (``front_bumper`` -> ``front``, ``bumper``)."""
    rows = []
    for words in cells:
        ids = {
            token
            for word in words
            for token in tokenizer(word.replace("_", " "), add_special_tokens=False)["input_ids"]
        }
        rows.append(sorted(ids))
    return rows


def _word_stage(
    vlm: Any,
    args: TrainArgs,
    train_features: Any,
    val_features: Any,
    train_words: list[list[list[int]]],
    val_words: list[list[list[int]]],
    output_dir: Path,
    *,
    resume: bool,
    progress: Callable[..., Any] | None,
) -> Any:
    """The align stage with ``align_target: words`` (:meth:`ComposedVLM.word_loss_sum`): the
    projector alone, on precomputed features, no decoder pass; the loss per visual token."""
    import torch

    device = next(vlm.projector.parameters()).device
    cells = vlm.cells
    size = vlm.causal_lm.get_input_embeddings().weight.shape[0]
    words = torch.tensor(sorted({t for row in train_words for ids in row for t in ids}))

    def step(group: list[list[int]]) -> tuple[float, int]:
        count = sum(len(b) for b in group) * cells
        total = 0.0
        # the softmax over every target word and a fresh sample of the rest (torch's generator
        # is in the checkpoint, so a resumed run draws the same samples)
        vocabulary = torch.cat([words, torch.randperm(size)[:WORD_NEGATIVES]]).unique()
        for batch in group:
            loss = vlm.word_loss_sum(
                train_features[batch].to(device), [train_words[i] for i in batch], vocabulary
            )
            (loss / count).backward()
            total += loss.item() / count
        return total, sum(len(b) for b in group)

    def evaluate() -> dict[str, float]:
        if not val_words:
            return {"eval_loss": float("nan")}
        with torch.no_grad():
            loss = vlm.word_loss_sum(val_features.to(device), val_words)
        return {"eval_loss": loss.item() / (len(val_words) * cells)}

    return train_loop(
        args,
        vlm,
        len(train_words),
        step,
        evaluate,
        output_dir,
        unit="images",
        resume=resume,
        progress=progress,
        desc="align (visual tokens to words)",
    )


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
    learn: list[list[bool]] | None = None,
    val_learn: list[list[bool]] | None = None,
) -> Any:
    """One training stage over precomputed features; the loss is on answer tokens only.
    ``tags``/``val_tags``: each example's tag tokens (:meth:`ComposedVLM.tag_ids`), or None;
    ``learn``/``val_learn``: which of each answer's tokens carry the loss (None: all)."""
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

    def labelled(source: list[list[int]], masks: list[list[bool]] | None, i: int) -> int:
        return sum(masks[i]) if masks else len(source[i])

    def step(group: list[list[int]]) -> tuple[float, int]:
        label_tokens = sum(labelled(train_answers, learn, i) for b in group for i in b)
        total, seen = 0.0, 0
        for batch in (part for b in group for part in length_groups(b, train_answers)):
            answers = [train_answers[i] for i in batch]
            with autocast(args.precision, device):
                embeds, attention, labels = vlm.inputs(
                    train_features[batch], prompt, answers, rows(tags, batch), rows(learn, batch)
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
                        rows(val_learn, batch),
                    )
                    total += vlm.loss_sum(*inputs).item()
                count += sum(labelled(val_answers, val_learn, i) for i in batch)
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
