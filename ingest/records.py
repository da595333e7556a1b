"""Typed records that cross package boundaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

BlockKind = Literal["SPEC", "PROCEDURE", "EXPLANATION", "WIRING", "TROUBLESHOOTING"]
BLOCK_KINDS: tuple[BlockKind, ...] = (
    "SPEC",
    "PROCEDURE",
    "EXPLANATION",
    "WIRING",
    "TROUBLESHOOTING",
)
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class ManualBlock:
    """One retrievable unit of a service manual (a spec row, a procedure, a wiring table...)."""

    id: str
    source: str
    page: int
    section: tuple[str, ...]
    kind: BlockKind
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "section": list(self.section)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManualBlock:
        return cls(**{**data, "section": tuple(data["section"])})


@dataclass(frozen=True)
class QAPair:
    """A ground-truth question about one manual block, with its reference answer.

    ``answerable=False``: the manual does not hold the answer (``block_id`` is empty); the right
    reply is to say so (the refusal of :func:`finetune.datasets.refusal`).
    """

    id: str
    block_id: str
    kind: BlockKind
    split: Split
    question: str
    answer: str
    answerable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
