"""LoRA (and QLoRA: ``train.quantization=nf4`` or ``int8``) supervised fine-tuning of a causal
LM on chat examples.

Lifecycle: setup (model, adapter, data) -> train (with checkpoints and exact resume) -> save
(adapter, tokenizer with its chat template, manifest). Only assistant tokens carry labels, and the
end-of-turn token is among them, so the model learns to stop. :func:`main` is the entry point the
CLI and the job worker call; :func:`run` trains on a model and examples already in hand.

Over 400 lines on purpose: the packing, loss and eval-loss helpers are this recipe's own and sit
beside the training step that uses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.artifact import Manifest
from finetune.config import to_dict
from finetune.datasets import DatasetReport, SFTExample, chat_token_counter, write_jsonl
from finetune.quantization import prepare_for_training, quantization_note, require_quantization
from finetune.text_data import DataArgs, data_files, sft_dataset
from finetune.trainer import (
    IGNORE,
    LoraArgs,
    TrainArgs,
    TrainingError,
    TrainResult,
    autocast,
    finish,
    precision_note,
    train_loop,
)

if TYPE_CHECKING:
    from finetune.workspace import Workspace


@dataclass
class TextRecipeConfig:
    base_model: str = "smollm2-135m-instruct"
    name: str = "manual-lora"
    # How a step's loss averages: "token" (every answer token counts the same, so a long
    # procedure outweighs a spec value ~20x) or "example" (each answer counts the same).
    loss_weighting: Literal["token", "example"] = "token"
    # With lora.last_layers and more than one epoch: keep each example's hidden state at the
    # first trained layer from its first pass, and start later epochs there (the frozen layers
    # below give the same output every time; finetune/layer_cache.py). Costs memory: tokens x
    # hidden size x 4 bytes; skipped above MAX_LAYER_CACHE_BYTES or for unsupported models.
    cache_frozen_layers: bool = True
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


MAX_LAYER_CACHE_BYTES = 4 * 2**30


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


def collate_packed(
    items: list[tuple[list[int], list[int]]],
    max_length: int,
    pad_id: int,
    rows: list[list[tuple[int, int, int]]] | None = None,
):
    """Pack examples into rows; position ids restart at 0 for every example, which makes the
    model's attention block-diagonal (no example sees another), so the loss of an example is
    the same packed or alone. ``rows``: the layout, when the caller has :func:`row_spans`
    already. Returns input_ids, position_ids, labels and the real token count.
    """
    import torch

    rows = rows or row_spans([len(ids) for ids, _ in items], max_length)
    width = max(start + length for row in rows for _, start, length in row)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        for i, start, length in row:
            ids, labs = items[i]
            input_ids[r, start : start + length] = torch.tensor(ids)
            labels[r, start : start + length] = torch.tensor(labs)
            positions[r, start : start + length] = torch.arange(length)
        end = sum(length for _, _, length in row)
        positions[r, end:] = torch.arange(width - end)  # the tail: its own segment
    return input_ids, positions, labels, sum(len(ids) for ids, _ in items)


def row_spans(lengths: list[int], max_length: int) -> list[list[tuple[int, int, int]]]:
    """:func:`pack`'s rows as ``(position in lengths, start in the row, length)`` spans."""
    rows = []
    for row in pack(lengths, max_length):
        spans, start = [], 0
        for i in row:
            spans.append((i, start, lengths[i]))
            start += lengths[i]
        rows.append(spans)
    return rows


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


@dataclass(frozen=True)
class TextRun:
    """What :func:`main` did: where the run lives, the data it trained on, what training gave."""

    run_dir: Path
    dataset: DatasetReport
    result: TrainResult

    def summary(self) -> dict[str, Any]:
        """The run in one dict (`tunegraph finetune text --json` prints it; a job returns it)."""
        return {
            "adapter": str(self.result.adapter_dir),
            "run_dir": str(self.run_dir),
            "data": self.dataset.summary(),
            **self.result.metrics,
        }


def main(
    config: TextRecipeConfig,
    workspace: Workspace,
    *,
    resume: bool = True,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> TextRun:
    """The recipe from start to end: load ``config.base_model`` from ``workspace.models``,
    assemble ``config.data`` and keep it as ``runs_dir/NAME/data/{train,val}.jsonl``, train with
    checkpoints and metrics in ``runs_dir/NAME``, save the adapter to ``adapters_dir/NAME``.

    ``progress``: a tqdm-like bar factory for the steps; ``log``: where the lines for a person
    go (the data counts, the precision). Tool-use examples (``data.source=tools``,
    ``data.tool_share``) run the serving tools through ``workspace.tool_index``. Raises
    ``ModelNotFoundError``, ``DatasetError`` or :class:`TrainingError`, each naming what to
    change.
    """
    quantization = config.train.quantization
    model, tokenizer = workspace.models.load_causal_lm(config.base_model, quantization)
    if log and quantization != "none":
        log(quantization_note(model, quantization))
    dataset = sft_dataset(
        config.data,
        count_tokens=chat_token_counter(tokenizer),
        demo_dir=workspace.demo_dir,
        max_length=config.train.max_length,
        seed=config.train.seed,
        passage_index=workspace.passage_index,
        index_blocks=workspace.index_blocks,
        teacher=workspace.teacher,
        tool_index=workspace.tool_index,
        log=log,
    )
    run_dir = workspace.runs_dir / config.name
    data_hash = write_jsonl(dataset.train, run_dir / "data" / "train.jsonl")
    write_jsonl(dataset.val, run_dir / "data" / "val.jsonl")
    kept = data_files(dataset)
    for name, text in kept.items():
        (run_dir / name).write_text(text, "utf-8")
    if log:
        counts = dataset.summary()
        log(
            f"data: {counts['train']} train / {counts['val']} val examples; train per kind "
            f"{counts['train_per_kind']} (before balancing "
            f"{counts['train_per_kind_before_balancing']}; "
            f"{counts['added_after_balancing']} added after it); "
            f"{len(dataset.too_long)} too long, {len(dataset.rejected)} rejected lines"
        )
        note = precision_note(config.train.precision)
        if note:
            log(note)
    result = run(
        config,
        model,
        tokenizer,
        dataset.train,
        dataset.val,
        run_dir,
        data_hash=data_hash,
        adapter_dir=workspace.adapters_dir / config.name,
        resume=resume,
        progress=progress,
        extra_files=kept,
    )
    return TextRun(run_dir, dataset, result)


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
    extra_files: dict[str, str] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``model``; checkpoints and metrics go to ``output_dir``, the
    adapter to ``adapter_dir`` (default ``output_dir/adapter``) with ``extra_files`` (path
    under it -> text: the data card, the test questions) written in the same atomic save.

    ``stop_after_steps`` ends the run early after saving a checkpoint (used to test resume).
    """
    import torch
    from peft import get_peft_model

    args = config.train
    require_quantization(
        model,
        args.quantization,
        loader=f"ModelStore.load_causal_lm(name, quantization={args.quantization!r})",
    )
    torch.manual_seed(args.seed)
    model.config.use_cache = False
    if args.quantization != "none":
        model = prepare_for_training(model)
    peft_model = get_peft_model(
        model,
        config.lora.peft_config(
            layers_to_transform=config.lora.layers(model.config.num_hidden_layers),
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
    device = next(peft_model.parameters()).device

    per_example = config.loss_weighting == "example"
    cache = _layer_cache(config, peft_model, train_data)

    def step(group: list[list[int]]) -> tuple[float, int]:
        label_tokens = sum(
            sum(1 for t in train_data[i][1] if t != IGNORE) for b in group for i in b
        )
        if label_tokens == 0:
            raise TrainingError("a batch has no label tokens: every answer was cut off")
        # the loss is a mean over the step's answer tokens, or over its answers
        denominator = sum(len(b) for b in group) if per_example else label_tokens
        step_loss, seen = 0.0, 0
        for batch in group:
            items = [train_data[i] for i in batch]
            rows = row_spans([len(ids) for ids, _ in items], args.max_length)
            input_ids, positions, labels, tokens = collate_packed(
                items, args.max_length, pad_id, rows
            )
            weights = example_weights(positions, labels).to(device) if per_example else None
            inputs: dict[str, Any] = {"input_ids": input_ids.to(device)}
            layers, record = nullcontext(), nullcontext()
            if cache is not None:
                # the same layout, by training-example index
                spans = [[(batch[i], start, length) for i, start, length in row] for row in rows]
                if cache.ready(batch):
                    inputs = {"inputs_embeds": cache.packed_states(spans, input_ids.shape[1])}
                    layers = cache.trained_layers_only()
                else:
                    record = cache.capture(spans)
            with layers, record, autocast(args.precision, device):
                loss_sum = label_loss_sum(
                    peft_model,
                    labels=labels.to(device),
                    position_ids=positions.to(device),
                    weights=weights,
                    **inputs,
                )
            (loss_sum / denominator).backward()
            step_loss += loss_sum.item() / denominator
            seen += tokens
        return step_loss, seen

    def evaluate() -> dict[str, float]:
        return {
            "eval_loss": evaluate_loss(
                peft_model, val_data, args.batch_size, pad_id, args.precision
            )
        }

    loop = train_loop(
        args,
        peft_model,
        len(train_data),
        step,
        evaluate,
        output_dir,
        unit="tokens",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
    )

    def write(directory: Path) -> None:
        peft_model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)  # the chat template travels with the adapter
        for name, text in (extra_files or {}).items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text, "utf-8")

    template_hash = hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()
    return finish(
        loop,
        output_dir,
        adapter_dir or output_dir / "adapter",
        write,
        Manifest(
            "text-lora",
            config.base_model,
            data_hash,
            to_dict(config),
            extra={"chat_template_sha256": template_hash},
        ),
        metrics={**loop.metrics, "val_examples": len(val_data)},
    )


def _layer_cache(config: TextRecipeConfig, peft_model: Any, train_data: list) -> Any:
    """A :class:`FrozenLayerCache` when it can pay off (see ``cache_frozen_layers``)."""
    from finetune.layer_cache import FrozenLayerCache, supported

    decoder = peft_model.get_base_model().get_decoder()
    trained = config.lora.layers(len(decoder.layers))  # None: every layer (nothing frozen)
    first = trained[0] if trained else 0
    tokens = sum(len(ids) for ids, _ in train_data)
    if (
        not config.cache_frozen_layers
        or config.train.epochs < 2
        or not supported(decoder, first)
        or tokens * decoder.config.hidden_size * 4 > MAX_LAYER_CACHE_BYTES
    ):
        return None
    return FrozenLayerCache(decoder, first)


def example_weights(positions: Any, labels: Any) -> Any:
    """For packed rows (position ids restart at 0 per example): 1 / (the example's label
    tokens) at every label position, in the order of ``labels[:, 1:][labels[:, 1:] != IGNORE]``
    — summed with these weights, each example's loss is its mean over its own answer tokens.
    """
    import torch

    segment = (positions == 0).cumsum(dim=1)[:, 1:]  # the example each target belongs to
    key = segment + torch.arange(len(positions)).unsqueeze(1) * (segment.max() + 1)
    selected = key[labels[:, 1:] != IGNORE]
    counts = torch.bincount(selected)
    return 1.0 / counts[selected].float()


def label_loss_sum(
    model: Any,
    input_ids: Any = None,
    attention: Any = None,
    labels: Any = None,
    *,
    position_ids: Any = None,
    weights: Any = None,
    inputs_embeds: Any = None,
) -> Any:
    """Summed next-token cross-entropy over the positions that have labels (each position's
    term times ``weights``, one per label position in row-major order, when given); the input
    is ``input_ids`` or ``inputs_embeds``.

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
            inputs_embeds=inputs_embeds,
            attention_mask=attention,
            position_ids=position_ids,
            use_cache=False,  # with a cache, transformers ignores packed position ids
        ).logits[:, :-1]
        selected = targets != IGNORE
        losses = torch.nn.functional.cross_entropy(
            logits[selected].float(), targets[selected], reduction="none"
        )
        return (losses * weights).sum() if weights is not None else losses.sum()
    hidden = causal_lm.get_decoder()(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention,
        position_ids=position_ids,
        use_cache=False,  # with a cache, transformers ignores packed position ids
    )
    selected = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden.last_hidden_state[:, :-1][selected])
    losses = torch.nn.functional.cross_entropy(logits.float(), targets[selected], reduction="none")
    return (losses * weights).sum() if weights is not None else losses.sum()


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
            with autocast(precision, device):
                total += label_loss_sum(model, input_ids, attention, labels).item()
            count += int((labels[:, 1:] != IGNORE).sum())
    model.train()
    return total / count if count else float("nan")
