"""Training metrics: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard event
files under ``tensorboard/`` when the ``tensorboard`` package is installed.

On resume the JSONL keeps what was logged up to the checkpoint and drops what came after it, so
the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, run_dir: Path, *, resume_step: int | None) -> None:
        """``resume_step``: the checkpoint's step when resuming (later records are dropped);
        None starts a fresh log."""
        self.path = run_dir / "metrics.jsonl"
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            kept = [
                line
                for line in self.path.read_text("utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), "utf-8")
        self._writer = _tensorboard_writer(run_dir / "tensorboard")

    @property
    def tensorboard(self) -> bool:
        return self._writer is not None

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: `pip install tunegraph[tensorboard]`
        return None
    return SummaryWriter(log_dir=str(directory))
