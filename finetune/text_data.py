"""Where the text recipe gets its chat examples — the demo corpus, users' SFT JSONL, or any
manual's blocks — plus spec paraphrases, unanswerable questions and RAFT-style examples with
retrieved passages, assembled into one train/val :class:`DatasetReport` with a test split and a
data card.

:class:`DataArgs` is the ``data:`` section of the text recipe's config; :func:`sft_dataset`
reads the files it names and hands them to the pure functions of :mod:`finetune.datasets` and
:mod:`finetune.manual_data`.

Over 400 lines on purpose: :func:`sft_dataset` is where the ``data:`` fields meet (a source, then
paraphrases, unanswerable, RAFT and tool examples, then the held-out guard) and each helper below
resolves one field's input, so the rules on which field needs which stay in one place.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from finetune.datasets import (
    DatasetError,
    DatasetReport,
    SFTExample,
    build_dataset,
    demo_examples,
    read_blocks,
    read_sft_jsonl,
    spec_paraphrases,
)
from finetune.manual_data import (
    Ask,
    Search,
    Split3,
    TeacherError,
    as_examples,
    kind_counts,
    manual_questions,
    naming,
    raft_examples,
    spec_questions,
    teacher_questions,
    unanswerable_questions,
    wording,
)
from finetune.tool_data import ToolIndex, tool_examples, tool_questions
from ingest.records import ManualBlock, QAPair

# Blocks -> a search over them (the composition root builds it with the serving retriever).
PassageIndex = Callable[[Sequence[ManualBlock]], Search]
# An ingested namespace -> its blocks.
IndexBlocks = Callable[[str], list[ManualBlock]]
# (base URL, model) of an OpenAI-compatible endpoint -> a function that asks it one prompt.
TeacherFactory = Callable[[str, str], Ask]


# Kinds whose unanswerable questions are asked only with passages (see sft_dataset).
CLOSED_BOOK_UNSURE = ("TROUBLESHOOTING", "WIRING")


@dataclass
class DataArgs:
    """The text recipe's ``data:`` section: where its examples come from."""

    # tools: only tool-use examples (finetune/tool_data.py) for the questions of data.manual /
    # data.namespace, else of the demo corpus: an adapter of its own for router="model"
    source: Literal["demo", "jsonl", "manual", "tools"] = "demo"
    demo_dir: Path | None = None  # default: TUNEGRAPH_HOME/demo
    train_file: Path | None = None  # source=jsonl: {"messages": [...]} lines
    val_file: Path | None = None  # source=jsonl: optional; else split from train_file
    # source=manual: a manual file or a folder of them (PDF, HTML, Markdown, text, scans), or
    # the name of an index namespace already ingested (`tunegraph ingest manuals --namespace`)
    manual: Path | None = None
    namespace: str | None = None
    phrasings: int = 2  # source=manual: training questions per fact, each in another wording
    # source=tools on the demo: 0 asks only the demo's own training questions (two wordings per
    # kind); N > 0 also asks every fact in N of the generic templates' training wordings
    # (finetune/manual_data.TEMPLATES, as data.source=manual does), so the router sees how
    # differently people ask for a value, a procedure or a pin
    template_phrasings: int = 0
    # What the manual covers (e.g. "Halden Vireo 1.6T"): half the template questions of
    # source=manual / data.template_phrasings name it, as people do, so that naming the vehicle
    # does not mark one kind of question (the demo's own training questions name it for specs
    # only)
    vehicle: str | None = None
    # source=manual: an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) whose model
    # writes the training questions (checked against the block); else the templates do
    teacher_url: str | None = None
    teacher_model: str | None = None
    val_fraction: float = 0.2
    max_ratio: float = 2.0
    max_val_examples: int = 0  # 0: all; N: a seeded sample of N (cheaper per-epoch eval loss)
    # N > 0: each spec row of the manual is also asked in N other phrasings (added after
    # balancing); the rows come from blocks_file (default for source=demo: the demo's blocks).
    spec_paraphrases: int = 0
    blocks_file: Path | None = None
    # Questions the manual cannot answer (refusals), as a share of the training questions.
    unanswerable_share: float = 0.0
    # RAFT: this share of the training questions is also asked with the passages retrieval
    # returns for it (the right one among distractors, or only distractors).
    raft_share: float = 0.0
    raft_passages: int = 3
    raft_oracle_share: float = 0.8
    # Tool use: this share of the training questions is also asked as the service-chat agent
    # asks it (tools offered, the right call, the tool's real result, the answer), plus
    # questions that need no tool; balanced by tool. 0: none (source=tools: 0 means all).
    tool_share: float = 0.0


def sft_dataset(
    data: DataArgs,
    *,
    count_tokens: Callable[[SFTExample], int],
    demo_dir: Path,
    max_length: int,
    seed: int,
    passage_index: PassageIndex | None = None,
    index_blocks: IndexBlocks | None = None,
    teacher: TeacherFactory | None = None,
    tool_index: ToolIndex | None = None,
    log: Callable[[str], None] | None = None,
) -> DatasetReport:
    """The training and validation examples ``data`` names, length-checked against
    ``max_length`` tokens (``count_tokens``: e.g. :func:`~finetune.datasets.chat_token_counter`),
    split and balanced; the report also holds the test questions, the manual's blocks, the data
    card and the input lines rejected as malformed.

    ``demo_dir``: the demo corpus when ``data.demo_dir`` is unset. ``passage_index``: builds
    the search RAFT examples retrieve with (needed when ``data.raft_share`` > 0);
    ``index_blocks``: reads an ingested namespace (``data.namespace``); ``teacher``: connects to
    ``data.teacher_url`` (needed when it is set); ``tool_index``: runs the serving tools over
    the blocks (needed for ``data.source=tools`` or ``data.tool_share`` > 0). Raises
    :class:`DatasetError` naming the file or the ``data.*`` field to fix.
    """
    demo_dir = data.demo_dir or demo_dir
    val_examples = None
    rejected: list = []
    blocks: list[ManualBlock] | None = None
    questions = Split3([], [], [])  # the QA pairs behind the examples, when there are any
    card: dict = {"source": data.source, "seed": seed}
    on_demo_tools = data.source == "tools" and data.manual is None and data.namespace is None
    if data.template_phrasings < 0 or (data.template_phrasings and not on_demo_tools):
        raise DatasetError(
            f"data.template_phrasings={data.template_phrasings}: use 0 or more, with "
            "data.source=tools on the demo corpus (data.source=manual has data.phrasings)"
        )
    if data.source == "manual":
        blocks, card["manual"] = _manual_blocks(data, index_blocks)
        _check_kinds(blocks, card["manual"], log)
        questions = _named(
            data, manual_questions(blocks, phrasings=data.phrasings, seed=seed), seed
        )
        if not questions.train:
            raise DatasetError(
                f"data.manual: {card['manual']} has {len(blocks)} block(s) but nothing to ask "
                "about: no spec row (name: value), no titled procedure, explanation or fault "
                "code with text under it, no pin table. Does it have headings?"
            )
        card["phrasing"] = f"templates ({data.phrasings} training wordings per fact)"
        if data.teacher_url:
            held_out = [q.question for q in questions.val + questions.test]
            written, taught = _taught(data, blocks, teacher, seed, held_out, log)
            questions = Split3(written, questions.val, questions.test)
            card["phrasing"] = (
                f"teacher {data.teacher_model} at {data.teacher_url} ({data.phrasings} training "
                f"questions per fact; val and test: templates)"
            )
            card["teacher"] = {
                "kept": taught.kept,
                "rejected": len(taught.rejected),
                "facts_on_templates": taught.failed_facts,
                "first_rejections": taught.rejected[:5],
            }
        examples, val_examples = as_examples(questions.train), as_examples(questions.val)
    elif data.source == "demo":
        examples, val_examples = demo_examples(demo_dir)
        questions = _demo_questions(demo_dir)
        card["phrasing"] = "the demo corpus' questions"
    elif data.source == "tools":
        if data.manual is not None or data.namespace is not None:
            blocks, card["manual"] = _manual_blocks(data, index_blocks)
            questions = _named(
                data, manual_questions(blocks, phrasings=data.phrasings, seed=seed), seed
            )
            card["phrasing"] = f"templates ({data.phrasings} training wordings per fact)"
        else:
            blocks = read_blocks(data.blocks_file or demo_dir / "manual" / "blocks.jsonl")
            questions = _demo_questions(demo_dir)
            card["phrasing"] = "the demo corpus' questions"
            if data.template_phrasings:
                generic = manual_questions(blocks, phrasings=data.template_phrasings, seed=seed)
                generic = _named(data, generic, seed)
                questions = Split3(questions.train + generic.train, questions.val, questions.test)
                card["phrasing"] += (
                    f" and templates ({data.template_phrasings} training wordings per fact)"
                )
        run_tool = _tool_runner(tool_index, blocks, "data.source=tools")
        share = data.tool_share or 1.0
        made = tool_examples(tool_questions(questions.train), run_tool, share=share, seed=seed)
        card["tools"] = {"share": share, **made.card()}
        examples = made.examples
        val_questions = tool_questions(questions.val, "val")
        val_examples = tool_examples(val_questions, run_tool, share=share, seed=seed).examples
    else:
        if data.train_file is None:
            raise DatasetError("data.source=jsonl needs data.train_file=PATH")
        examples, rejected = read_sft_jsonl(data.train_file)
        if data.val_file:
            val_examples, val_rejected = read_sft_jsonl(data.val_file)
            rejected += val_rejected
        card["phrasing"] = f"your own examples ({data.train_file.name})"
    needs_blocks = data.spec_paraphrases or data.unanswerable_share or data.raft_share
    if blocks is None and needs_blocks:
        blocks = _blocks_file(data, demo_dir)
    extra = []
    if data.spec_paraphrases and data.source == "manual":  # from the training templates only
        extra = as_examples(spec_questions(blocks or [], data.spec_paraphrases, seed=seed))
    elif data.spec_paraphrases:
        extra = spec_paraphrases(blocks or [], data.spec_paraphrases, seed)
    none = Split3([], [], [])
    if data.unanswerable_share:
        if not 0 < data.unanswerable_share <= 1:
            raise DatasetError(
                f"data.unanswerable_share={data.unanswerable_share}: use a value from 0 to 1"
            )
        trained = len(questions.train) or len(examples)
        count = round(data.unanswerable_share * trained / 0.6)  # 60 % of them are training ones
        none = unanswerable_questions(blocks or [], count, seed=seed)
        # Closed-book, only the parts the manual lacks: asked without passages about a made-up
        # fault code or pin, a small model cannot tell it from the listed ones of the same shape
        # and learned to refuse them all (measured on the demo: README, "Not in the manual");
        # with passages (RAFT, below) every unanswerable question is asked.
        extra += as_examples(q for q in none.train if q.kind not in CLOSED_BOOK_UNSURE)
        if val_examples is None:  # split from the user's examples: these join the pool
            examples = [*examples, *as_examples(none.val)]
        else:
            val_examples = [*val_examples, *as_examples(none.val)]
    raft = []
    if data.raft_passages < 1 or not 0 <= data.raft_oracle_share <= 1:
        raise DatasetError(
            f"data.raft_passages={data.raft_passages}, data.raft_oracle_share="
            f"{data.raft_oracle_share}: use 1 or more passages and a share from 0 to 1"
        )
    if data.raft_share:
        if passage_index is None:
            raise DatasetError(
                "data.raft_share needs a retriever over the manual; run through `tunegraph "
                "finetune text` (or give sft_dataset a passage_index)"
            )
        if not questions.train:
            raise DatasetError(
                "data.raft_share needs the questions behind the examples: use "
                "data.source=manual or demo"
            )
        search = passage_index(blocks or [])
        options = {"passages": data.raft_passages, "oracle_share": data.raft_oracle_share}
        raft = raft_examples(
            questions.train, search, blocks or [], share=data.raft_share, seed=seed, **options
        )
        # every unanswerable question is also asked after passages: what retrieval finds for it
        # never answers it, and that is the case the refusal must hold up in
        raft += raft_examples(none.train, search, blocks or [], share=1.0, seed=seed, **options)
        extra += raft
    if data.tool_share and data.source != "tools":
        if not questions.train:
            raise DatasetError(
                "data.tool_share needs the questions behind the examples: use "
                "data.source=manual or demo"
            )
        if blocks is None:
            blocks = _blocks_file(data, demo_dir)
        run_tool = _tool_runner(tool_index, blocks, "data.tool_share")
        made = tool_examples(
            tool_questions(questions.train), run_tool, share=data.tool_share, seed=seed
        )
        card["tools"] = {"share": data.tool_share, **made.card()}
        extra += made.examples
    if val_examples is not None and not val_examples:
        val_examples = None  # nothing to hold out as given: split from the training side
    # A safety net: no training example may be worded like a held-out question.
    held_out = {
        wording(q.question) for q in [*questions.val, *questions.test, *none.val, *none.test]
    }
    examples, dropped = _without(examples, held_out)
    extra, dropped_extra = _without(extra, held_out)
    report = build_dataset(
        examples,
        count_tokens=count_tokens,
        val_examples=val_examples,
        max_length=max_length,
        val_fraction=data.val_fraction,
        max_ratio=data.max_ratio,
        max_val=data.max_val_examples,
        seed=seed,
        extra_train=extra,
    )
    report.rejected = rejected
    report.blocks = blocks or []
    report.test = [*questions.test, *none.test]
    card.update(
        {
            "blocks_per_kind": kind_counts(blocks) if blocks else None,
            "examples_per_kind": dict(sorted(Counter(e.kind for e in report.train).items())),
            "train_examples": len(report.train),
            "val_examples": len(report.val),
            "test_questions": len(report.test),
            "test_per_kind": dict(sorted(Counter(q.kind for q in questions.test).items())),
            "spec_paraphrases": data.spec_paraphrases,
            "vehicle": data.vehicle,  # named in half the template questions
            "unanswerable": {
                "share": data.unanswerable_share,
                "train": len(none.train),
                "val": len(none.val),
                "test": len(none.test),
            },
            "raft": {
                "share": data.raft_share,
                "passages": data.raft_passages,
                "oracle_share": data.raft_oracle_share,
                "examples": len(raft),
            },
            "dropped_too_long": len(report.too_long),
            "dropped_as_held_out": dropped + dropped_extra,
        }
    )
    report.card = card
    return report


def _named(data: DataArgs, questions: Split3, seed: int) -> Split3:
    """The training questions, half of them naming ``data.vehicle`` when it is set."""
    if not data.vehicle:
        return questions
    named = naming(questions.train, data.vehicle, seed=seed)
    return Split3(named, questions.val, questions.test)


def _tool_runner(tool_index: ToolIndex | None, blocks: list[ManualBlock], field: str):
    if tool_index is None:
        raise DatasetError(
            f"{field} needs the service-chat tools over the manual; run through `tunegraph "
            "finetune text` (or give sft_dataset a tool_index)"
        )
    return tool_index(blocks)


def _without(examples: Sequence[SFTExample], held_out: set[str]) -> tuple[list[SFTExample], int]:
    """``examples`` whose question is worded like none of ``held_out``, and how many were not."""
    kept = [
        e
        for e in examples
        if wording(next(m["content"] for m in e.messages if m["role"] == "user")) not in held_out
    ]
    return kept, len(examples) - len(kept)


def _manual_blocks(
    data: DataArgs, index_blocks: IndexBlocks | None
) -> tuple[list[ManualBlock], str]:
    """The blocks of ``data.manual`` (parsed here) or of ``data.namespace`` (read from the
    index), and a name for where they came from."""
    if (data.manual is None) == (data.namespace is None):
        raise DatasetError(
            "data.source=manual needs data.manual=PATH (a manual file or a folder of them) "
            "or data.namespace=NAME (an index filled by `tunegraph ingest manuals`), not both"
        )
    if data.namespace is not None:
        if index_blocks is None:
            raise DatasetError("data.namespace needs an index: run through `tunegraph finetune`")
        try:
            blocks = index_blocks(data.namespace)
        except (NotImplementedError, ValueError) as exc:
            raise DatasetError(f"data.namespace={data.namespace}: {exc}") from None
        where = f"index namespace {data.namespace!r}"
        if not blocks:
            raise DatasetError(
                f"{where} holds no manual blocks: run `tunegraph ingest manuals FILES "
                f"--namespace {data.namespace}` first, or give data.manual=PATH"
            )
        return blocks, where
    from ingest.manuals import ManualError, collect_files, parse_manual

    path = Path(data.manual)
    if not path.exists():
        raise DatasetError(f"data.manual={path}: no such file or folder.")
    try:
        files = collect_files([path])
    except ManualError as exc:
        raise DatasetError(f"data.manual={path}: {exc}") from None
    if not files:
        raise DatasetError(
            f"data.manual={path}: no manual file in it (PDF, HTML, Markdown, text or PNG/JPEG)."
        )
    blocks, empty = [], []
    for file in files:
        try:
            found = parse_manual(file)
        except ManualError as exc:
            raise DatasetError(f"data.manual: {exc}") from None
        blocks += found
        if not found:
            empty.append(file.name)
    if not blocks:
        raise DatasetError(
            f"data.manual={path}: no manual block found in {', '.join(empty)} — no headings, "
            "spec rows, numbered steps or paragraphs could be read (is it a scan without OCR, "
            "or empty?)."
        )
    return blocks, str(path)


def _taught(
    data: DataArgs,
    blocks: list[ManualBlock],
    teacher: TeacherFactory | None,
    seed: int,
    held_out: list[str],
    log: Callable[[str], None] | None,
):
    if not data.teacher_model:
        raise DatasetError("data.teacher_url needs data.teacher_model=NAME (the model to ask)")
    if teacher is None:
        raise DatasetError("data.teacher_url needs a client: run through `tunegraph finetune`")
    ask = teacher(data.teacher_url, data.teacher_model)
    try:
        written, report = teacher_questions(
            blocks, ask, per_fact=data.phrasings, seed=seed, held_out=held_out
        )
    except TeacherError as exc:
        raise DatasetError(
            f"data.teacher_url={data.teacher_url}: the teacher did not answer ({exc}); check the "
            "URL and model, or leave data.teacher_url out to use the templates"
        ) from None
    if log:
        log(
            f"teacher {data.teacher_model}: {report.kept} questions kept, "
            f"{len(report.rejected)} rejected, {report.failed_facts} facts on templates"
        )
    return written, report


def _check_kinds(blocks: list[ManualBlock], where: str, log: Callable[[str], None] | None) -> None:
    counts = kind_counts(blocks)
    missing = [kind for kind, n in counts.items() if not n]
    if missing and log:
        found = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
        log(
            f"{where}: no {'/'.join(missing)} block (found {found}); the data has no questions "
            f"of {'that kind' if len(missing) == 1 else 'those kinds'}."
        )


def _blocks_file(data: DataArgs, demo_dir: Path) -> list[ManualBlock]:
    blocks_file = data.blocks_file
    if blocks_file is None and data.source == "demo":
        blocks_file = demo_dir / "manual" / "blocks.jsonl"
    if blocks_file is None:
        raise DatasetError(
            "data.spec_paraphrases, data.unanswerable_share and data.raft_share need the "
            "manual's blocks: add data.blocks_file=PATH (a blocks.jsonl written by "
            "`tunegraph ingest`) or use data.source=manual"
        )
    return read_blocks(blocks_file)


def _demo_questions(demo_dir: Path) -> Split3:
    """The demo corpus' QA pairs by split (``demo_examples`` has already checked they exist)."""
    qa_dir = demo_dir / "manual" / "qa"
    split = {}
    for name in ("train", "val", "test"):
        path = qa_dir / f"{name}.jsonl"
        lines = path.read_text("utf-8").splitlines() if path.is_file() else []
        split[name] = [QAPair(**json.loads(line)) for line in lines if line.strip()]
    return Split3(split["train"], split["val"], split["test"])


def data_files(report: DatasetReport) -> dict[str, str]:
    """What an adapter keeps of its data, by path under its folder: the test questions and the
    manual's blocks (what `tunegraph eval text` uses by default) and the data card."""
    files = {"data/card.json": json.dumps(report.card, indent=2) + "\n"}
    if report.test:
        files["data/test.jsonl"] = "".join(json.dumps(q.to_dict()) + "\n" for q in report.test)
    if report.blocks:
        files["data/blocks.jsonl"] = "".join(
            json.dumps(b.to_dict(), ensure_ascii=False) + "\n" for b in report.blocks
        )
    return files
