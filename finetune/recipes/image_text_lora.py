"""Recipe: LoRA (QLoRA with ``train.quantization=nf4`` or ``int8``) on any
``AutoModelForImageTextToText`` — LLaVA-1.5, Llama 3.2 Vision, Qwen2-VL, SmolVLM, Llama 4 — for
the fine-tuned assessment (``task: assess`` with ``hf_model`` set).

The model's own processor and chat template build each example (image + instruction -> the
Assessment's photo fields as compact JSON, the same target as the composed model's); the labels
cover the answer only: the prompt, and the image tokens the processor expands inside it, carry
none. LoRA goes into the language model's linear layers; the vision tower and projector stay
frozen (and, with QLoRA, quantised like the rest of the base). Same trainer, checkpoints,
resume, metrics and manifest as every recipe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from finetune.artifact import Manifest
from finetune.config import to_dict
from finetune.quantization import load_kwargs, prepare_for_training, require_quantization
from finetune.recipes.vision_lm_config import VisionLMConfig
from finetune.trainer import (
    IGNORE,
    TrainingError,
    TrainResult,
    autocast,
    finish,
    train_loop,
)
from finetune.vision_data import answer_text, image_messages

KIND = "image-text-to-text"
# the language model's modules, whatever the family calls it
LANGUAGE_MODEL = r".*(language_model|text_model)\..*"


def load(name: str, quantization: str = "none") -> tuple[Any, Any]:
    """The model and its processor; with ``quantization`` ``nf4`` or ``int8`` its linear layers
    load through bitsandbytes (QLoRA), on the GPU when there is one, else on the CPU."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = load_kwargs(quantization, "cuda" if torch.cuda.is_available() else "cpu")
    try:
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(
            f"hf_model={name!r} is not an image-text-to-text model tunegraph can load ({first}); "
            "give the folder or hub id of an AutoModelForImageTextToText (hub ids need "
            "TUNEGRAPH_ALLOW_NETWORK=1 and the network), or leave hf_model empty for the "
            "composed CPU model"
        ) from None
    return model, processor


def batch_inputs(
    processor: Any, instruction: str, pictures: Sequence[Any], answers: Sequence[str]
) -> tuple[dict[str, Any], Any]:
    """The processor's inputs for prompt + answer, right-padded, and labels on the answers."""
    prompt = processor.apply_chat_template(image_messages(instruction), add_generation_prompt=True)
    texts = []
    for answer in answers:
        full = processor.apply_chat_template(image_messages(instruction, answer))
        if not full.startswith(prompt):
            raise TrainingError(
                "the model's chat template renders the prompt differently with and without the "
                "answer; tunegraph cannot find where the answer starts for this model"
            )
        texts.append(full)
    processor.tokenizer.padding_side = "right"
    inputs = processor(text=texts, images=list(pictures), padding=True, return_tensors="pt")
    # the prompt's length with its image tokens expanded, per row (images may differ in size)
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = IGNORE
    for row, picture in enumerate(pictures):
        start = processor(text=[prompt], images=[picture], return_tensors="pt")["input_ids"]
        labels[row, : start.shape[1]] = IGNORE
    return dict(inputs), labels


def run(
    config: VisionLMConfig,
    train: Sequence[tuple[Any, Any]],
    val: Sequence[tuple[Any, Any]],
    output_dir: Path,
    *,
    data_hash: str,
    model_dir: Path | None = None,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    stop_after_steps: int | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> TrainResult:
    """Train LoRA on ``config.hf_model`` with ``(PIL image, DamageExample)`` pairs; checkpoints
    and metrics to ``output_dir``, the adapter, processor and layout to ``model_dir``.
    ``loaded``: the (model, processor) already in memory (tests)."""
    import torch
    from peft import get_peft_model

    args = config.train
    torch.manual_seed(args.seed)
    model, processor = loaded or load(config.hf_model, args.quantization)
    require_quantization(
        model, args.quantization, loader=f"image_text_lora.load(name, {args.quantization!r})"
    )
    if args.quantization != "none":
        model = prepare_for_training(model)
    targets = "|".join(config.lora.target_modules)
    peft_model = get_peft_model(
        model, config.lora.peft_config(target_modules=rf"{LANGUAGE_MODEL}\.({targets})")
    )
    device = next(peft_model.parameters()).device
    train_answers = [answer_text(e) for _, e in train]
    val_answers = [answer_text(e) for _, e in val]

    def loss_sum(indices: Sequence[int], pairs: Sequence[Any], answers: list[str]) -> Any:
        inputs, labels = batch_inputs(
            processor,
            config.instruction,
            [pairs[i][0] for i in indices],
            [answers[i] for i in indices],
        )
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with autocast(args.precision, device):
            logits = peft_model(**inputs).logits[:, :-1]
        targets = labels[:, 1:].to(device)
        return (
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                targets.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            ),
            int((targets != IGNORE).sum()),
            int(inputs["attention_mask"].sum()),
        )

    def step(group: list[list[int]]) -> tuple[float, int]:
        parts = [loss_sum(batch, train, train_answers) for batch in group]
        label_tokens = sum(n for _, n, _ in parts)
        if label_tokens == 0:
            raise TrainingError("a batch has no label tokens: raise train.max_length")
        for loss, _, _ in parts:
            (loss / label_tokens).backward()
        return sum(loss.item() for loss, _, _ in parts) / label_tokens, sum(t for *_, t in parts)

    def evaluate() -> dict[str, float]:
        if not val:
            return {"eval_loss": float("nan")}
        total, count = 0.0, 0
        for start in range(0, len(val), args.batch_size):
            loss, n, _ = loss_sum(
                range(start, min(start + args.batch_size, len(val))), val, val_answers
            )
            total, count = total + loss.item(), count + n
        return {"eval_loss": total / count}

    loop = train_loop(
        args,
        peft_model,
        len(train),
        step,
        evaluate,
        output_dir,
        unit="tokens",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
        desc=f"LoRA {Path(config.hf_model).name}",
    )
    layout = {"kind": KIND, "base_model": config.hf_model, "instruction": config.instruction}

    def write(directory: Path) -> None:
        peft_model.save_pretrained(directory / "adapter")
        processor.save_pretrained(directory / "adapter")  # chat template and image settings
        (directory / "vlm.json").write_text(json.dumps(layout, indent=2))

    return finish(
        loop,
        output_dir,
        model_dir or output_dir / "model",
        write,
        Manifest("vision-language-model", config.hf_model, data_hash, to_dict(config)),
        metrics={**loop.metrics, "val_examples": len(val)},
    )
