"""Where the text recipe gets its chat examples: the demo corpus or users' SFT JSONL, plus spec
paraphrases of the manual's spec rows, assembled into one train/val :class:`DatasetReport`.

:class:`DataArgs` is the ``data:`` section of the text recipe's config; :func:`sft_dataset`
reads the files it names and hands them to the pure functions of :mod:`finetune.datasets`.
"""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass
class DataArgs:
    """The text recipe's ``data:`` section: where its examples come from."""

    source: Literal["demo", "jsonl"] = "demo"
    demo_dir: Path | None = None  # default: TUNEGRAPH_HOME/demo
    train_file: Path | None = None  # source=jsonl: {"messages": [...]} lines
    val_file: Path | None = None  # source=jsonl: optional; else split from train_file
    val_fraction: float = 0.2
    max_ratio: float = 2.0
    max_val_examples: int = 0  # 0: all; N: a seeded sample of N (cheaper per-epoch eval loss)
    # N > 0: each spec row of the manual is also asked in N other phrasings (added after
    # balancing); the rows come from blocks_file (default for source=demo: the demo's blocks).
    spec_paraphrases: int = 0
    blocks_file: Path | None = None


def sft_dataset(
    data: DataArgs,
    *,
    count_tokens: Callable[[SFTExample], int],
    demo_dir: Path,
    max_length: int,
    seed: int,
) -> DatasetReport:
    """The training and validation examples ``data`` names, length-checked against
    ``max_length`` tokens (``count_tokens``: e.g. :func:`~finetune.datasets.chat_token_counter`),
    split and balanced; the report also lists the input lines rejected as malformed.

    ``demo_dir``: the demo corpus when ``data.demo_dir`` is unset. Raises :class:`DatasetError`
    naming the file or the ``data.*`` field to fix.
    """
    demo_dir = data.demo_dir or demo_dir
    val_examples = None
    rejected = []
    if data.source == "demo":
        examples, val_examples = demo_examples(demo_dir)
    else:
        if data.train_file is None:
            raise DatasetError("data.source=jsonl needs data.train_file=PATH")
        examples, rejected = read_sft_jsonl(data.train_file)
        if data.val_file:
            val_examples, val_rejected = read_sft_jsonl(data.val_file)
            rejected += val_rejected
    extra = []
    if data.spec_paraphrases:
        blocks_file = data.blocks_file
        if blocks_file is None and data.source == "demo":
            blocks_file = demo_dir / "manual" / "blocks.jsonl"
        if blocks_file is None:
            raise DatasetError(
                "data.spec_paraphrases needs the manual's spec rows: add "
                "data.blocks_file=PATH (a blocks.jsonl written by `tunegraph ingest`)"
            )
        extra = spec_paraphrases(read_blocks(blocks_file), data.spec_paraphrases, seed)
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
    return report
