"""Training recipes: each is setup -> train -> save, configured by one dataclass.

A recipe's ``main(config, workspace, ...)`` runs it from start to end; :func:`vision_recipe`
picks the vision recipe (and loads its config) the way ``tunegraph finetune vision`` does, and
:func:`text_recipe` loads the text recipe's config the way ``tunegraph finetune text`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The YAML a short form (``--task`` without ``--config``) starts from: the shipped quick
# profile, so that the first command a user types trains what the documented recipe trains.
QUICK_PROFILES = {
    "damage": "vision/damage_quick.yaml",
    "classify": "vision/classify_quick.yaml",
    "assess": "vision/vlm_quick.yaml",
}
TEXT_QUICK_PROFILE = "text/smollm2_quick.yaml"
# What the text quick profile derives from a manual's blocks and questions: off for your own
# chat examples (data.source=jsonl), which carry neither, unless set on the command line.
_FROM_A_MANUAL = ("data.spec_paraphrases", "data.unanswerable_share", "data.raft_share")


def text_recipe(config_path: Path | None, overrides: Sequence[str] = ()) -> Any:
    """The text recipe's config as ``tunegraph finetune text`` loads it: the YAML at
    ``config_path``, else (the short form) the shipped quick profile
    (:data:`TEXT_QUICK_PROFILE`), so the first command a user types trains what ``make demo``
    trains. With that profile (named or not) and ``data.source=jsonl``, its manual-derived
    extras (spec paraphrases, unanswerable and RAFT examples) are off unless ``overrides`` set
    them.
    ``overrides``: dotted ``KEY=VALUE`` pairs over the YAML. Raises
    :class:`~finetune.config.ConfigError` naming the setting to change.
    """
    from finetune.config import load_config, shipped_config
    from finetune.recipes.text_lora import TextRecipeConfig

    extra = list(overrides)
    quick = shipped_config(TEXT_QUICK_PROFILE)
    config_path = config_path or quick
    if config_path.resolve() == quick.resolve():  # the short form, or the profile named
        given = {pair.split("=", 1)[0].strip() for pair in overrides}
        if "data.source=jsonl" in (pair.replace(" ", "") for pair in overrides):
            extra = [f"{key}=0" for key in _FROM_A_MANUAL if key not in given] + extra
    return load_config(TextRecipeConfig, config_path, extra)


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

    Without ``config_path`` the task's quick profile (:data:`QUICK_PROFILES`; ``damage`` when
    no task is named) is the YAML. For an image classifier, ``train_file`` (COCO ``.json`` or
    classification JSONL) and ``val_file`` set ``data.*``. ``overrides``: dotted ``KEY=VALUE``
    pairs over the YAML. Raises :class:`~finetune.config.ConfigError` naming the setting to
    change.
    """
    from finetune.config import ConfigError, load_config, shipped_config

    if config_path is None:
        if (task or "damage") not in QUICK_PROFILES:
            raise ConfigError(f"task={task!r}: use one of {', '.join(QUICK_PROFILES)}")
        config_path = shipped_config(QUICK_PROFILES[task or "damage"])
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
