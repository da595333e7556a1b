"""What the vision recipes' entry points (``main`` of ``image_classifier.py`` and
``vision_lm.py``) share: the lines they log before training, and what they return."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.trainer import TrainResult, precision_note
from finetune.vision_datasets import VisionData


@dataclass(frozen=True)
class VisionRun:
    """What a vision recipe's ``main`` did: where the run lives, what training gave, the items
    its data left out, and the lines that sum the run up for a person (steps, losses,
    throughput; for an image classifier also how many epochs ran and why it stopped)."""

    run_dir: Path
    result: TrainResult
    rejected: list[dict[str, Any]] = field(default_factory=list)
    headline: str = ""

    def summary(self) -> dict[str, Any]:
        """The run in one dict (`tunegraph finetune vision --json` prints it; a job returns it)."""
        return {
            "model": str(self.result.model_dir),
            "run_dir": str(self.run_dir),
            "rejected": self.rejected,
            **self.result.metrics,
        }


def announce(
    log: Callable[[str], None] | None,
    data: VisionData,
    precisions: Sequence[str],
    rejected_lines: int = 0,
) -> None:
    """Log what a run is about to train on (:meth:`VisionData.describe`) and, once each, how
    its stages' ``precisions`` will run on this machine."""
    if log is None:
        return
    notes = dict.fromkeys(precision_note(p) for p in precisions)
    for line in [*data.describe(rejected_lines), *(note for note in notes if note)]:
        log(line)
