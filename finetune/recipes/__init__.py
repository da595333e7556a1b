"""Training recipes: each is setup -> train -> save, configured by one dataclass.

A recipe's ``main(config, workspace, ...)`` runs it from start to end; :func:`vision_recipe`
picks the vision recipe (and loads its config) the way ``tunegraph finetune vision`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def vision_recipe(
    config_path: Path | None,
    task: str | None = None,
    train_file: Path | None = None,
    val_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> tuple[Any, Callable[..., Any]]:
    """The config and the ``main`` of the vision recipe that a YAML file and the command's
    options name: the vision-language model (``task: assess``, in the YAML or as ``task``) or
    an image classifier (``damage``, ``classify``).

    For an image classifier, ``train_file`` (COCO ``.json`` or classification JSONL) and
    ``val_file`` set ``data.*``; ``task="classify"`` without a YAML names the model
    ``classifier`` unless ``overrides`` name it. ``overrides``: dotted ``KEY=VALUE`` pairs over
    the YAML. Raises :class:`~finetune.config.ConfigError` naming the setting to change.
    """
    from finetune.config import load_config

    if (task or _config_task(config_path)) == "assess":
        from finetune.recipes import vision_lm
        from finetune.recipes.vision_lm_config import VisionLMConfig

        return load_config(VisionLMConfig, config_path, ["task=assess", *overrides]), vision_lm.main

    from finetune.recipes import image_classifier

    extra = list(overrides)
    if task:
        extra.append(f"task={task}")
    if train_file:
        source = "coco" if train_file.suffix == ".json" else "jsonl"
        extra += [f"data.source={source}", f"data.train_file={train_file}"]
    if val_file:
        extra.append(f"data.val_file={val_file}")
    if task == "classify" and not config_path and not any(o.startswith("name=") for o in extra):
        extra.append("name=classifier")
    config = load_config(image_classifier.ImageClassifierConfig, config_path, extra)
    return config, image_classifier.main


def _config_task(config_path: Path | None) -> str | None:
    import yaml

    if config_path is None or not config_path.is_file():
        return None  # load_config reports the missing file
    try:
        data = yaml.safe_load(config_path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None  # and the malformed one
    return data.get("task") if isinstance(data, dict) else None
