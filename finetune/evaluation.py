"""Base versus fine-tuned answers to held-out manual questions, with or without retrieval."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.artifact import read_manifest
from finetune.datasets import SYSTEM_PROMPT, DatasetError, is_refusal, refusal
from finetune.metrics import (
    hallucinated_numbers,
    known_numbers,
    latency_stats,
    numbers,
    rouge_l,
    spec_exact_match,
)
from ingest.records import QAPair

if TYPE_CHECKING:
    from finetune.model_store import ModelStore

Retrieve = Callable[[str], list[str]]
Conversation = list[dict[str, str]]
# (conversations, adapter name or None for the base, max_new_tokens, progress) -> greedy answers
Answerer = Callable[[Sequence[Conversation], str | None, int, Callable[[int], None]], list[Any]]


@dataclass(frozen=True)
class Generated:
    text: str
    stopped: bool  # ended with the end-of-turn token, not at the token limit
    latency_ms: float


def prompt_messages(question: QAPair, context: Sequence[str] = ()) -> list[dict[str, str]]:
    """The same system prompt and task prefix as training; retrieved blocks go before the
    question when there are any."""
    return manual_messages(question.kind, question.question, context)


def manual_messages(kind: str, question: str, context: Sequence[str] = ()) -> list[dict[str, str]]:
    """A manual question as the fine-tuned model saw it in training (evaluation and serving use
    this one format)."""
    user = f"[{kind}] {question}"
    if context:
        user = "Manual excerpts:\n" + "\n---\n".join(context) + f"\n\nQuestion: {user}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def generate(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[Generated]:
    """Greedy answers, batched with left padding; a batch's time is each of its answers' latency."""
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    results: list[Generated] = []
    model.eval()
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start : start + batch_size]
        encoded = [
            tokenizer.apply_chat_template(
                c, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            for c in batch
        ]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for ids in encoded], device=device
        )
        attention = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device
        )
        started = time.perf_counter()
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        for row in output[:, width:].tolist():
            stopped = eos in row
            row = row[: row.index(eos)] if stopped else row
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            results.append(Generated(text, stopped, elapsed_ms))
        if progress:
            progress(len(batch))
    return results


def text_base(adapter_dir: Path, base_model: str) -> str:
    """The base model an adapter was trained on (its manifest), else ``base_model``."""
    manifest = read_manifest(adapter_dir)
    return (manifest.base_model if manifest else "") or base_model


def transformers_answerer(
    models: ModelStore, base: str, adapter_dir: Path | None, batch_size: int
) -> Answerer:
    """Answers through transformers ``generate`` (batched, left-padded), with the PEFT adapter
    in ``adapter_dir`` switched on for any adapter name and off for the base (None)."""
    model, tokenizer = models.load_causal_lm(base)
    tuned_tokenizer = tokenizer
    if adapter_dir is not None:
        from peft import PeftModel
        from transformers import AutoTokenizer

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        if (adapter_dir / "tokenizer_config.json").exists():  # the template it trained with
            tuned_tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))

    def answer(conversations, adapter, max_new_tokens, progress):
        base_only = model.disable_adapter() if adapter_dir and adapter is None else nullcontext()
        with base_only:
            return generate(
                model,
                tokenizer if adapter is None else tuned_tokenizer,
                conversations,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                progress=progress,
            )

    return answer


def score(
    questions: Sequence[QAPair], answers: Sequence[Generated], known_numbers: set[str]
) -> dict[str, Any]:
    """Per-kind and overall metrics for one model's answers.

    Answerable questions are scored per kind (SPEC exact match, ROUGE-L for the rest); an
    answer that is the refusal (:func:`~finetune.datasets.is_refusal`) scores 0 there and counts
    as a false abstention. Unanswerable questions (``answerable=False``) count only towards the
    abstention rate: the share of them answered with the refusal. Numbers in an answer that
    appear in no manual block are hallucinated, on either kind of question (a refusal is not
    checked: the numbers it names are the question's).
    """
    per_kind: dict[str, dict[str, Any]] = {}
    numbers_total = numbers_bad = 0
    abstained = false_abstained = unanswerable = 0
    for question, answer in zip(questions, answers, strict=True):
        refused = is_refusal(answer.text)
        if not refused:  # a refusal repeats the question, whose numbers are the user's
            numbers_total += len(numbers(answer.text))
            numbers_bad += len(hallucinated_numbers(answer.text, known_numbers))
        if not question.answerable:
            unanswerable += 1
            abstained += refused
            continue
        false_abstained += refused
        row = per_kind.setdefault(question.kind, {"n": 0, "stopped": 0, "scores": []})
        row["n"] += 1
        row["stopped"] += answer.stopped
        if refused:
            row["scores"].append(0.0)
        elif question.kind == "SPEC":
            row["scores"].append(float(spec_exact_match(answer.text, question.answer)))
        else:
            row["scores"].append(rouge_l(answer.text, question.answer))
    kinds = {
        kind: {
            "n": row["n"],
            ("spec_exact_match" if kind == "SPEC" else "rouge_l"): round(
                sum(row["scores"]) / row["n"], 4
            ),
            "stopped_with_eos": round(row["stopped"] / row["n"], 4),
        }
        for kind, row in sorted(per_kind.items())
    }
    n = len(answers) or 1
    answerable = len(answers) - unanswerable
    return {
        "per_kind": kinds,
        "spec_exact_match": kinds.get("SPEC", {}).get("spec_exact_match"),
        "stopped_with_eos": round(sum(a.stopped for a in answers) / n, 4),
        "hallucinated_number_rate": round(numbers_bad / numbers_total, 4) if numbers_total else 0.0,
        "abstention_rate": round(abstained / unanswerable, 4) if unanswerable else None,
        "false_abstention_rate": round(false_abstained / answerable, 4) if answerable else None,
        "unanswerable": unanswerable,
        "latency_ms": latency_stats([a.latency_ms for a in answers]),
        "n": len(answers),
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per model variant, one column per kind's headline metric, then abstention."""
    kinds = sorted({k for r in results.values() for k in r["per_kind"]})
    header = [
        "model",
        *kinds,
        "EOS",
        "halluc. numbers",
        "abstains (unanswerable)",
        "false abstentions",
        "p50 ms",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, result in results.items():
        cells = []
        for kind in kinds:
            row = result["per_kind"].get(kind, {})
            value = row.get("spec_exact_match", row.get("rouge_l"))
            cells.append("-" if value is None else f"{value:.3f}")
        for key in ("abstention_rate", "false_abstention_rate"):
            value = result.get(key)
            cells_value = "-" if value is None else f"{value:.3f}"
            cells.append(cells_value)
        abstain, false_abstain = cells[-2:]
        lines.append(
            f"| {name} | "
            + " | ".join(cells[:-2])
            + f" | {result['stopped_with_eos']:.3f} | {result['hallucinated_number_rate']:.3f} | "
            + f"{abstain} | {false_abstain} | {result['latency_ms'].get('p50', 0):.0f} |"
        )
    note = (
        "SPEC: exact match of the value; other kinds: ROUGE-L F1 (answerable questions only). "
        "Abstains: share of the unanswerable questions answered with the refusal; false "
        "abstentions: share of the answerable ones."
    )
    return "\n".join([*lines, "", note])


def evaluate_text(
    models: ModelStore,
    adapter: str,
    *,
    base_model: str,
    questions: Path,
    blocks: Path | Sequence[str],
    report_dir: Path,
    kinds: Sequence[str] = (),
    limit: int | None = None,
    search: Retrieve | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] | None = None,
    answerer: Answerer | None = None,
    supported: Callable[[str, list[str]], bool] | None = None,
    with_base: bool = True,
) -> dict[str, dict[str, Any]]:
    """Answer the QA JSONL ``questions`` with the base model and the fine-tuned ``adapter`` (a
    name under the store's adapters folder, or an absolute path), each also with the manual excerpts
    ``search`` returns for the question when it is given; score the answers (:func:`score`,
    numbers in no line of ``blocks`` count as hallucinated) and write ``report.json`` and
    ``report.md`` to ``report_dir``. Returns the scores by variant (``base``,
    ``finetuned (ADAPTER)``, ``... + retrieval``). ``blocks``: a blocks.jsonl, or the block
    texts themselves.

    ``kinds``: only questions of these block kinds; ``limit``: a seeded sample of that many.
    The base model is the adapter's (its manifest), else ``base_model``; without the adapter
    the base model alone is evaluated. ``progress``: a tqdm-like bar factory, one bar per
    variant; ``log``: where the lines for a person go. ``answerer``: what generates the
    answers (the serving engine, given the base and the adapter by the caller); default:
    transformers ``generate`` in batches of ``batch_size``. ``supported(question, passages)``:
    the chat modes' retrieval gate — in the variants with retrieval, a question whose passages
    it rejects gets the refusal without asking the model (counted as
    ``refused_by_retrieval``; latency and EOS cover the answers the model wrote).
    ``with_base=False``: only the fine-tuned variants (half the time).
    """
    try:
        items = [
            QAPair(**json.loads(line))
            for line in questions.read_text("utf-8").splitlines()
            if line.strip()
        ]
        block_texts = (
            [
                json.loads(line)["text"]
                for line in blocks.read_text("utf-8").splitlines()
                if line.strip()
            ]
            if isinstance(blocks, Path)
            else list(blocks)
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise DatasetError(f"cannot read the questions or blocks: {exc}") from None
    if kinds:
        items = [q for q in items if q.kind in kinds]
        if not items:
            raise DatasetError(f"no {'/'.join(kinds)} question in {questions}")
    if limit and limit < len(items):
        items = sorted(random.Random(0).sample(items, limit), key=lambda q: q.id)
    known = known_numbers(block_texts)

    adapter_dir = models.config.adapters_dir / adapter
    tuned = (adapter_dir / "adapter_config.json").exists()
    variants: list[tuple[str, str | None]] = [("base", None)] if with_base or not tuned else []
    if tuned:
        variants.append((f"finetuned ({adapter})", adapter))
    elif log:
        log(
            f"no adapter {adapter!r} in {models.config.adapters_dir}: evaluating the base model only"
        )
    if answerer is None:
        base = text_base(adapter_dir, base_model)
        answerer = transformers_answerer(models, base, adapter_dir if tuned else None, batch_size)

    contexts = [search(q.question) for q in items] if search else [[] for _ in items]
    gated = {
        i
        for i, (q, c) in enumerate(zip(items, contexts, strict=True))
        if search and supported is not None and not supported(q.question, c)
    }
    results = {}
    for name, variant_adapter in variants:
        for with_context in (False, True) if search else (False,):
            label = name + (" + retrieval" if with_context else "")
            asked = [i for i in range(len(items)) if not (with_context and i in gated)]
            conversations = [
                prompt_messages(items[i], contexts[i] if with_context else ()) for i in asked
            ]
            bar = progress(total=len(items), desc=label, unit="q") if progress else nullcontext()
            with bar as counter:
                update = counter.update if counter is not None else (lambda _n: None)
                generated = answerer(conversations, variant_adapter, max_new_tokens, update)
                update(len(items) - len(asked))
            answers = [Generated(refusal(f"“{q.question}”"), True, 0.0) for q in items]
            for i, answer in zip(asked, generated, strict=True):
                answers[i] = answer
            results[label] = score(items, answers, known)
            if len(asked) < len(items):  # latency and EOS of the answers the model wrote
                results[label]["latency_ms"] = latency_stats([a.latency_ms for a in generated])
                results[label]["stopped_with_eos"] = round(
                    sum(a.stopped for a in generated) / (len(generated) or 1), 4
                )
                results[label]["refused_by_retrieval"] = len(items) - len(asked)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(results, indent=2))
    (report_dir / "report.md").write_text(
        f"# Text evaluation ({len(items)} questions)\n\n{markdown_table(results)}\n"
    )
    return results
