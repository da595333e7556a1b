"""Chat SFT datasets from manual blocks (and users' own SFT JSONL), as pure functions.

Every example is ``{"messages": [system, user, assistant]}`` whose user turn starts with the task
prefix of its block kind (``[SPEC]``, ``[PROCEDURE]``, ...), as in the seed dataset of
``shared/seeds/002``. The train/val split is deterministic for a seed and keeps every question
about one block on the same side; minority kinds are upsampled until the largest kind has at
most ``max_ratio`` times the examples of the smallest; examples longer than the model's
``max_length`` tokens are reported and dropped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.jsonl import parse_lines, read_utf8
from ingest.records import BLOCK_KINDS, ManualBlock, QAPair

# Short on purpose: it is repeated in every training example, and most answers are a few tokens.
SYSTEM_PROMPT = "Answer from the vehicle service manual."
OTHER = "OTHER"  # the kind of a user example without a task prefix
# What every chat mode says when the manual does not hold the answer: one fixed sentence that
# names what was asked, so that clients (and the evaluation) recognise it by its start.
REFUSAL_START = "The manual does not cover"
_PREFIX = re.compile(r"^\[(" + "|".join(BLOCK_KINDS) + r")\]\s*")
_ROLES = {"system", "user", "assistant"}


class DatasetError(ValueError):
    """A dataset file cannot be used as a whole; the message names the file and the fix."""


@dataclass(frozen=True)
class SFTExample:
    messages: tuple[dict[str, str], ...]
    kind: str
    group: str  # examples of one group (one manual block) never straddle the split

    def to_json(self) -> str:
        return json.dumps({"messages": list(self.messages)}, ensure_ascii=False)


@dataclass
class DatasetReport:
    train: list[SFTExample] = field(default_factory=list)
    val: list[SFTExample] = field(default_factory=list)
    too_long: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # malformed input lines
    counts_before_balancing: dict[str, int] = field(default_factory=dict)
    added_after_balancing: int = 0  # e.g. spec paraphrases (see build_dataset's ``extra_train``)
    # Filled by finetune.text_data.sft_dataset: the held-out questions (eval text's default),
    # the manual the data was built from (its numbers count as known), the data card.
    test: list[QAPair] = field(default_factory=list)
    blocks: list[ManualBlock] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "train": len(self.train),
            "val": len(self.val),
            "train_per_kind": dict(sorted(Counter(e.kind for e in self.train).items())),
            "train_per_kind_before_balancing": self.counts_before_balancing,
            "added_after_balancing": self.added_after_balancing,
            "val_per_kind": dict(sorted(Counter(e.kind for e in self.val).items())),
            "dropped_too_long": self.too_long,
            "rejected": self.rejected,
        }


def refusal(subject: str) -> str:
    """The one refusal sentence, naming what was asked.

    >>> refusal("the wheel nut torque")
    'The manual does not cover the wheel nut torque.'
    """
    return f"{REFUSAL_START} {subject.strip().rstrip('.?')}."


def is_refusal(text: str) -> bool:
    """An answer that says the manual does not hold what was asked (:func:`refusal`).

    >>> is_refusal(" The manual does not cover fault code P0999."), is_refusal("120 Nm")
    (True, False)
    """
    return text.strip().lower().startswith(REFUSAL_START.lower())


def example(kind: str, question: str, answer: str, group: str) -> SFTExample:
    """One chat example with the task prefix.

    >>> example("SPEC", "What is the wheel bolt torque?", "120 Nm", "b1").messages[1]["content"]
    '[SPEC] What is the wheel bolt torque?'
    """
    return SFTExample(
        (
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"[{kind}] {question}"},
            {"role": "assistant", "content": answer},
        ),
        kind,
        group,
    )


def examples_from_blocks(blocks: Iterable[ManualBlock]) -> list[SFTExample]:
    """One templated question per block, for manuals that come without QA pairs."""
    result = []
    for block in blocks:
        first, _, rest = block.text.partition("\n")
        title = first.split(" - ")[0].strip()
        if block.kind == "SPEC" and ": " in first:
            name, value = first.split(": ", 1)
            result.append(example("SPEC", f"What is the {_lower_first(name)}?", value, block.id))
        elif rest.strip():
            question = {
                "PROCEDURE": f"What is the procedure for: {first}?",
                "EXPLANATION": f"Explain: {title}.",
                "WIRING": f"Give the pin assignment of {title}.",
                "TROUBLESHOOTING": f"What are the causes and checks for {title}?",
            }.get(block.kind, f"What does the manual say about {title}?")
            result.append(example(block.kind, question, rest.strip(), block.id))
    return result


# Generic ways to ask for one spec value; `spec_paraphrases` draws from them. Written for any
# manual (no vehicle names), and none is a template of the demo's test questions.
SPEC_PARAPHRASES = (
    "What is the {x}?",
    "{X}?",
    "Tell me the {x}.",
    "What does the manual give for the {x}?",
    "What is the specified {x}?",
    "Look up the {x}.",
    "{X}: what is the spec?",
    "I need the {x}.",
    "Quick question: the {x}?",
    "According to the service manual, what is the {x}?",
)


def spec_paraphrases(
    blocks: Iterable[ManualBlock], per_block: int, seed: int = 42
) -> list[SFTExample]:
    """``per_block`` extra questions for each spec row ``"Name: value"``, in the phrasings of
    :data:`SPEC_PARAPHRASES` (seeded; all distinct up to their number, then round after round).

    A spec answer is a few tokens, so asking for each value in several phrasings is cheap, and
    it is what teaches a small model the value rather than the wording of one question.

    >>> block = ManualBlock("b1", "m.pdf", 1, (), "SPEC", "Wheel bolt torque: 120 Nm")
    >>> [e.messages[2]["content"] for e in spec_paraphrases([block], 2)]
    ['120 Nm', '120 Nm']
    """
    if per_block < 0:
        raise DatasetError(f"data.spec_paraphrases={per_block}: use 0 (none) or more")
    rng = random.Random(seed)
    result = []
    for block in blocks:
        first = block.text.partition("\n")[0]
        if block.kind != "SPEC" or ": " not in first:
            continue
        name, value = (part.strip() for part in first.split(": ", 1))
        templates: list[str] = []
        while len(templates) < per_block:
            templates += rng.sample(SPEC_PARAPHRASES, len(SPEC_PARAPHRASES))
        for template in templates[:per_block]:
            question = template.format(x=_lower_first(name), X=name[:1].upper() + name[1:])
            result.append(example("SPEC", question, value, block.id))
    return result


def read_blocks(path: Path) -> list[ManualBlock]:
    """A ``blocks.jsonl`` file (what `tunegraph ingest` and the demo corpus write)."""
    text = read_utf8(path, DatasetError)
    blocks = []
    for number, record, malformed in parse_lines(text):
        try:
            if malformed:
                raise ValueError(malformed)
            blocks.append(ManualBlock.from_dict(record))
        except (TypeError, KeyError, ValueError) as exc:
            raise DatasetError(
                f"{path}, line {number}: not a manual block ({exc}); expected "
                '{"id", "source", "page", "section", "kind", "text"}'
            ) from None
    return blocks


def examples_from_qa(pairs: Iterable[QAPair]) -> list[SFTExample]:
    """Ground-truth question/answer pairs (e.g. the demo corpus' train and val questions)."""
    return [example(p.kind, p.question, p.answer, p.block_id) for p in pairs]


def demo_examples(demo_dir: Path) -> tuple[list[SFTExample], list[SFTExample]]:
    """The demo corpus' training examples (each block's train phrasing) and validation examples
    (its val phrasings); the test phrasings stay out of training for `tunegraph eval text`."""
    qa_dir = demo_dir / "manual" / "qa"
    if not qa_dir.is_dir():
        raise DatasetError(f"{qa_dir} does not exist: run `tunegraph demo` first.")
    train, val = (
        examples_from_qa(
            QAPair(**json.loads(line))
            for line in (qa_dir / f"{name}.jsonl").read_text("utf-8").splitlines()
            if line.strip()
        )
        for name in ("train", "val")
    )
    return train, val


def read_sft_jsonl(path: Path) -> tuple[list[SFTExample], list[dict[str, Any]]]:
    """Users' own ``{"messages": [...]}`` JSONL: the valid examples and a per-line report."""
    text = read_utf8(path, DatasetError)
    examples, rejected = [], []
    for number, record, malformed in parse_lines(text):
        problem = malformed or _message_problem(record)
        if problem:
            rejected.append({"line": number, "reason": problem})
            continue
        messages = tuple({"role": m["role"], "content": m["content"]} for m in record["messages"])
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        match = _PREFIX.match(user)
        kind = match.group(1) if match else OTHER
        examples.append(SFTExample(messages, kind, f"{path.name}:{number}"))
    if not examples:
        raise DatasetError(
            f"{path}: no usable example ({len(rejected)} line(s) rejected, first: "
            f"{rejected[0] if rejected else 'the file is empty'})."
        )
    return examples, rejected


def _message_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        return 'expected an object with a "messages" list'
    messages = record["messages"]
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"message {index} needs a role of {', '.join(sorted(_ROLES))}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f"message {index} has no text content"
    if not any(m["role"] == "user" for m in messages):
        return "no user turn"
    if not messages or messages[-1]["role"] != "assistant":
        return "no assistant turn at the end: there is nothing to learn from"
    return None


def split(
    examples: Sequence[SFTExample], val_fraction: float = 0.2, seed: int = 42
) -> tuple[list[SFTExample], list[SFTExample]]:
    """Deterministic split by group: a block's questions are all in train or all in val."""
    groups = sorted({e.group for e in examples})
    random.Random(seed).shuffle(groups)
    val_groups = set(groups[: round(len(groups) * val_fraction)])
    train = [e for e in examples if e.group not in val_groups]
    val = [e for e in examples if e.group in val_groups]
    return train, val


def balance(
    examples: Sequence[SFTExample], max_ratio: float = 2.0, seed: int = 42
) -> list[SFTExample]:
    """Upsample minority kinds (whole copies first, then a seeded sample) until
    ``max(count) / min(count) <= max_ratio``.

    >>> data = [example("SPEC", str(i), "1 Nm", str(i)) for i in range(9)]
    >>> data += [example("WIRING", "w", "pin", "w")]
    >>> Counter(e.kind for e in balance(data))
    Counter({'SPEC': 9, 'WIRING': 5})
    """
    if max_ratio < 1:
        raise ValueError(f"max_ratio={max_ratio}: use a value >= 1")
    by_kind: dict[str, list[SFTExample]] = {}
    for item in examples:
        by_kind.setdefault(item.kind, []).append(item)
    if not by_kind:
        return []
    largest = max(len(items) for items in by_kind.values())
    target = -(-largest // max_ratio)  # ceil: the smallest a kind may be
    rng = random.Random(seed)
    result = []
    for kind in sorted(by_kind):
        items = by_kind[kind]
        need = int(max(target, len(items)))
        copies, rest = divmod(need, len(items))
        result += items * copies + rng.sample(items, rest)
    return result


def drop_too_long(
    examples: Sequence[SFTExample], count_tokens: Callable[[SFTExample], int], max_length: int
) -> tuple[list[SFTExample], list[dict[str, Any]]]:
    """Keep examples whose chat-templated length fits ``max_length``; report the others."""
    kept, dropped = [], []
    for item in examples:
        tokens = count_tokens(item)
        if tokens > max_length:
            dropped.append({"group": item.group, "kind": item.kind, "tokens": tokens})
        else:
            kept.append(item)
    return kept, dropped


def build_dataset(
    examples: Sequence[SFTExample],
    *,
    count_tokens: Callable[[SFTExample], int],
    val_examples: Sequence[SFTExample] | None = None,
    max_length: int = 512,
    val_fraction: float = 0.2,
    max_ratio: float = 2.0,
    max_val: int = 0,
    seed: int = 42,
    extra_train: Sequence[SFTExample] = (),
) -> DatasetReport:
    """Length check, deterministic split (unless ``val_examples`` are given), then balancing of
    the training side only.

    ``max_val`` > 0 keeps a seeded sample of that many validation examples (the eval loss of
    every epoch costs a pass over them). Give ``val_examples`` when the validation set asks
    about the same facts in other words (the demo's val questions): a fine-tuned model is meant
    to learn every block, so holding whole blocks out would cap what it can answer.
    ``extra_train`` (length-checked too) joins the training side after balancing, so that it
    does not drive the upsampling of the other kinds: spec paraphrases are a few tokens each.
    """
    report = DatasetReport()
    fitting, report.too_long = drop_too_long(examples, count_tokens, max_length)
    if val_examples is None:
        train, report.val = split(fitting, val_fraction, seed)
    else:
        train = fitting
        report.val, too_long_val = drop_too_long(val_examples, count_tokens, max_length)
        report.too_long += too_long_val
    if 0 < max_val < len(report.val):  # a seeded sample, kept in file order
        keep = set(random.Random(seed).sample(range(len(report.val)), max_val))
        report.val = [e for i, e in enumerate(report.val) if i in keep]
    report.counts_before_balancing = dict(sorted(Counter(e.kind for e in train).items()))
    report.train = balance(train, max_ratio, seed)
    extra, too_long_extra = drop_too_long(extra_train, count_tokens, max_length)
    report.too_long += too_long_extra
    report.train += extra
    report.added_after_balancing = len(extra)
    return report


def chat_token_counter(tokenizer: Any) -> Callable[[SFTExample], int]:
    """Count tokens the way training sees them: the tokenizer's own chat template."""

    def count(item: SFTExample) -> int:
        encoded = tokenizer.apply_chat_template(
            list(item.messages), tokenize=True, return_dict=True
        )
        return len(encoded["input_ids"])

    return count


def write_jsonl(examples: Iterable[SFTExample], path: Path) -> str:
    """Write ``{"messages": [...]}`` lines; returns the sha256 of the file (the data hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(item.to_json() + "\n" for item in examples)
    path.write_text(text, "utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text if first.isupper() else text[:1].lower() + text[1:]
