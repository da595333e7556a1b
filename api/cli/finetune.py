"""``tunegraph finetune text|vision``: each command parses its options, runs one recipe's
``main`` and prints what it returned."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from api import composition
from api.cli.options import find_config_file, load_settings

TRAIN_TASKS = click.Choice(["damage", "classify", "assess"])


@click.group()
def finetune() -> None:
    """Fine-tune text (issue #4) and vision (issue #5) models."""


@finetune.command("text", context_settings={"ignore_unknown_options": True})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=find_config_file,
    help="YAML recipe, e.g. configs/text/llama31_8b_qlora.yaml [default: the quick profile, "
    "configs/text/smollm2_quick.yaml]",
)
@click.option(
    "--no-resume", is_flag=True, help="start over instead of resuming the last checkpoint"
)
@click.option(
    "--teacher-url",
    default=None,
    help="with data.source=manual: an OpenAI-compatible endpoint whose model writes the training "
    "questions (data.teacher_url) [default: templates]",
)
@click.option("--teacher-model", default=None, help="the teacher's model name (data.teacher_model)")
@click.option("--json", "as_json", is_flag=True, help="print the final metrics as JSON")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def finetune_text(
    config_path: Path | None,
    no_resume: bool,
    teacher_url: str | None,
    teacher_model: str | None,
    as_json: bool,
    overrides: tuple[str, ...],
) -> None:
    """LoRA (QLoRA with train.quantization=nf4|int8) on a causal LM; KEY=VALUE pairs override the YAML.

    Your own manual: data.source=manual data.manual=PATH (files or a folder) or
    data.namespace=NAME (an ingested index). Checkpoints and metrics.jsonl go to
    TUNEGRAPH_HOME/runs/NAME; the adapter, its tokenizer (chat template), a manifest, and under
    data/ its test questions, manual blocks and data card to TUNEGRAPH_HOME/adapters/NAME. An
    interrupted run resumes exactly where its last checkpoint left off.
    """
    from tqdm import tqdm

    from finetune.config import ConfigError
    from finetune.datasets import DatasetError
    from finetune.model_store import ModelNotFoundError
    from finetune.recipes import text_lora, text_recipe
    from finetune.trainer import TrainingError

    settings = load_settings()
    if teacher_url:
        overrides = (*overrides, f"data.teacher_url={teacher_url}")
    if teacher_model:
        overrides = (*overrides, f"data.teacher_model={teacher_model}")
    try:
        config = text_recipe(config_path, overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run = text_lora.main(
            config,
            composition.workspace(settings),
            resume=not no_resume,
            progress=functools.partial(tqdm, disable=as_json),
            log=None if as_json else click.echo,
        )
    except (ModelNotFoundError, DatasetError, TrainingError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(run.summary(), indent=2, default=str))
    else:
        m = run.result.metrics
        click.echo(
            f"adapter: {run.result.adapter_dir}\n{m['steps']} steps, train loss "
            f"{m['train_loss']:.3f}, eval loss {m['eval_loss']:.3f}, {m['tokens_per_s']:.0f} tokens/s"
            f"\n{m.get('stop_summary', '')}"
        )


@finetune.command("vision", context_settings={"ignore_unknown_options": True})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=find_config_file,
    help="YAML recipe, e.g. configs/vision/damage_quick.yaml [default: the task's quick profile, "
    "configs/vision/{damage,classify,vlm}_quick.yaml]",
)
@click.option(
    "--task",
    type=TRAIN_TASKS,
    default=None,
    help="damage (damage model), classify, or assess (vision-language model) [default: the "
    "config's, else damage]",
)
@click.option(
    "--train",
    "train_file",
    type=click.Path(path_type=Path),
    default=None,
    help="training data: classification JSONL (classify) or COCO .json (damage)",
)
@click.option("--val", "val_file", type=click.Path(path_type=Path), default=None)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the trained model goes [default: TUNEGRAPH_HOME/vision/NAME]",
)
@click.option("--no-resume", is_flag=True, help="start over instead of resuming")
@click.option("--json", "as_json", is_flag=True, help="print the final metrics as JSON")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def finetune_vision(
    config_path: Path | None,
    task: str | None,
    train_file: Path | None,
    val_file: Path | None,
    out: Path | None,
    no_resume: bool,
    as_json: bool,
    overrides: tuple[str, ...],
) -> None:
    """Train the damage model, an image classifier or the vision-language model (task
    assess); KEY=VALUE pairs override the YAML.

    Short form for classification, which trains as configs/vision/classify_quick.yaml does:
    `tunegraph finetune vision --task classify --train TRAIN.jsonl --val VAL.jsonl --out DIR`.
    Checkpoints and metrics.jsonl go to TUNEGRAPH_HOME/runs/NAME; an interrupted run resumes.
    """
    from tqdm import tqdm

    from api.composition import workspace
    from finetune.config import ConfigError
    from finetune.recipes import vision_recipe
    from finetune.trainer import TrainingError

    settings = load_settings()
    try:
        config, train = vision_recipe(config_path, task, train_file, val_file, overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        done = train(
            config,
            workspace(settings),
            out=out,
            resume=not no_resume,
            progress=functools.partial(tqdm, disable=as_json),
            log=None if as_json else click.echo,
        )
    except (TrainingError, ValueError) as exc:  # ValueError: the data, the decoder's name
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(done.summary(), indent=2, default=str))
    else:
        click.echo(f"model: {done.result.model_dir}\n{done.headline}")
