"""Where a training run reads its data and writes its results: one typed record the recipes'
entry points take instead of the application's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finetune.model_store import ModelStore
    from finetune.text_data import IndexBlocks, PassageIndex, TeacherFactory
    from finetune.tool_data import ToolIndex


@dataclass(frozen=True)
class Workspace:
    """``demo_dir``: the demo corpus (the recipes' default data); ``runs_dir``: checkpoints,
    metrics and the data each run trained on (``runs_dir/NAME``); ``adapters_dir``: text
    adapters; ``vision_dir``: vision models; ``models``: the offline store base models load
    from. ``passage_index``: builds a search over manual blocks with the serving retriever
    (RAFT examples); ``index_blocks``: the blocks of an ingested index namespace; ``teacher``:
    connects to a teacher model that writes training questions; ``tool_index``: runs the
    service-chat agent's tools over manual blocks (tool-use examples)."""

    demo_dir: Path
    runs_dir: Path
    adapters_dir: Path
    vision_dir: Path
    models: ModelStore
    passage_index: PassageIndex | None = None
    index_blocks: IndexBlocks | None = None
    teacher: TeacherFactory | None = None
    tool_index: ToolIndex | None = None
