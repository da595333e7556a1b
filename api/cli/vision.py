"""``tunegraph finetune vision`` and ``tunegraph eval vision``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from api.cli.options import load_settings

TASKS = click.Choice(["damage", "classify"])
TRAIN_TASKS = click.Choice(["damage", "classify", "assess"])


@click.command("vision", context_settings={"ignore_unknown_options": True})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML recipe, e.g. configs/vision/damage_quick.yaml [default: built-in defaults]",
)
@click.option(
    "--task",
    type=TRAIN_TASKS,
    default=None,
    help="damage (damage model), classify, or assess (vision-language model) [default: the "
    "config's]",
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

    Short form for classification:
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


@click.command("vision")
@click.option("--task", type=TASKS, required=True)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="trained model folder [default: TUNEGRAPH_HOME/vision/damage-model for damage]",
)
@click.option(
    "--base",
    "base_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="classify: a second (base) model; the report adds per-class deltas base -> model",
)
@click.option(
    "--test",
    "test_file",
    type=click.Path(path_type=Path),
    default=None,
    help="classify: test JSONL; damage: COCO .json [default: the demo's test split]",
)
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="report folder (JSON, confusion matrix PNG) [default: TUNEGRAPH_HOME/runs/eval-vision-...]",
)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def eval_vision(
    task: str,
    model_dir: Path | None,
    base_dir: Path | None,
    test_file: Path | None,
    images_dir: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Score a trained vision model on held-out images: accuracy, per-class accuracy and the
    confusion matrix (classify), damage-type/part F1, severity accuracy and cost MAE (damage),
    and latency statistics."""
    from api.composition import model_store
    from finetune.vision_evaluation import evaluate_vision

    settings = load_settings()
    model_dir = model_dir or settings.vision_dir / "damage-model"
    out = out or settings.runs_dir / f"eval-vision-{task}-{model_dir.name}"
    try:
        result = evaluate_vision(
            task,
            model_dir,
            base_dir=base_dir,
            test_file=test_file,
            images_dir=images_dir,
            demo_dir=settings.demo_dir,
            out=out,
            load_causal_lm=model_store(settings).load_causal_lm,
            progress=None if as_json else _tqdm(),
        )
    except ValueError as exc:  # VisionDataError, VisionModelError: the test data, the model
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_vision(task, result, out)


def _tqdm():
    from tqdm import tqdm

    return tqdm


def _print_vision(task: str, result: dict, out: Path) -> None:
    if task == "classify":
        click.echo(
            f"accuracy {result['accuracy']:.3f} on {result['n']} images ({result['model']['model']})"
        )
        if "base" in result:
            click.echo(f"base accuracy {result['base']['accuracy']:.3f}")
        click.echo("class                      accuracy   delta")
        for label, accuracy in result["per_class"].items():
            delta = result.get("per_class_delta", {}).get(label)
            click.echo(f"{label:<26} {accuracy:>8.3f}   {'' if delta is None else f'{delta:+.3f}'}")
        latency = result["model"]["latency_ms"]
    else:
        click.echo(
            f"{result['n']} images ({result['model']}): damage-type F1 micro "
            f"{result['type_f1_micro']:.3f} / macro {result['type_f1_macro']:.3f}; part F1 "
            f"{result['part_f1_micro']:.3f}; pair F1 {result['pair_f1']:.3f}; severity accuracy "
            f"{result['severity_accuracy']}; cost MAE {result.get('cost_mae')} USD; invalid "
            f"{result['invalid_rate']:.1%}"
        )
        click.echo("per type: " + ", ".join(f"{k} {v:.3f}" for k, v in result["type_f1"].items()))
        latency = result["latency_ms"]
    click.echo(
        "latency ms: "
        + ", ".join(f"{k} {v}" for k, v in latency.items() if k != "throughput_per_s")
        + f"; {latency['throughput_per_s']} images/s sequential"
    )
    click.echo(f"report: {out / 'results.json'}")
