"""``tunegraph finetune vision`` and ``tunegraph eval vision``."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import click

from api.cli.options import load_settings

TASKS = click.Choice(["damage", "classify"])
TRAIN_TASKS = click.Choice(["damage", "classify", "assess"])
VLM_MAX_SIDE = 512


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

    from finetune.config import ConfigError, load_config
    from finetune.recipes.image_classifier import ImageClassifierConfig, run
    from finetune.trainer import TrainingError
    from finetune.vision_datasets import VisionDataError

    settings = load_settings()
    if (task or _config_task(config_path)) == "assess":
        _finetune_vlm(settings, config_path, overrides, out, no_resume, as_json)
        return
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
    try:
        config = load_config(ImageClassifierConfig, config_path, extra)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    # a disabled bar still counts steps: a job's child process reports them (job_process)
    progress = functools.partial(tqdm, disable=as_json)
    try:
        train, val, rejected, digest = _training_data(config, settings.demo_dir, progress)
    except (VisionDataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if not as_json:
        click.echo(f"data: {len(train)} train / {len(val)} val images, {len(rejected)} rejected")
        for item in rejected[:10]:
            click.echo(f"  rejected {item}")
        _echo_precision(config.train.precision)
    run_dir = settings.runs_dir / config.name
    model_dir = out or settings.vision_dir / config.name
    try:
        result = run(
            config,
            train,
            val,
            run_dir,
            data_hash=digest,
            model_dir=model_dir,
            resume=not no_resume,
            progress=progress,
        )
    except TrainingError as exc:
        raise click.ClickException(str(exc)) from None
    m = result.metrics
    _report_training(
        result,
        run_dir,
        rejected,
        as_json,
        f"{m.get('steps')} steps, train loss {m.get('train_loss', 0):.3f}, eval loss "
        f"{m.get('eval_loss', 0):.3f}, {m.get('images_per_s', 0):.0f} images/s",
    )


def _report_training(result, run_dir: Path, rejected: list, as_json: bool, summary: str) -> None:
    if as_json:
        output = {"model": str(result.model_dir), "run_dir": str(run_dir), "rejected": rejected}
        click.echo(json.dumps({**output, **result.metrics}, indent=2, default=str))
    else:
        click.echo(f"model: {result.model_dir}\n{summary}")


def _config_task(config_path: Path | None) -> str | None:
    import yaml

    if config_path is None or not config_path.is_file():
        return None  # load_config reports the missing file
    try:
        data = yaml.safe_load(config_path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None  # and the malformed one
    return data.get("task") if isinstance(data, dict) else None


def _finetune_vlm(settings, config_path, overrides, out, no_resume, as_json) -> None:
    from tqdm import tqdm

    from api.composition import model_store
    from finetune.config import ConfigError, load_config
    from finetune.model_store import ModelNotFoundError
    from finetune.recipes.vision_lm import VisionLMConfig, run
    from finetune.trainer import TrainingError
    from finetune.vision_datasets import VisionDataError

    try:
        config = load_config(VisionLMConfig, config_path, ["task=assess", *overrides])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    progress = functools.partial(tqdm, disable=as_json)
    encoder = Path(config.encoder).expanduser()
    if not encoder.is_dir():
        encoder = settings.vision_dir / config.encoder
    try:
        # the encoder reads small images: keep small copies in memory
        train, val, rejected, digest = _damage_data(
            config.data, settings.demo_dir, progress, max_side=VLM_MAX_SIDE
        )
        if not config.hf_model:
            decoder, tokenizer = model_store(settings).load_causal_lm(config.base_model)
    except (VisionDataError, ModelNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if not as_json:
        click.echo(f"data: {len(train)} train / {len(val)} val images, {len(rejected)} rejected")
        _echo_precision(config.align.precision, config.train.precision)
    run_dir = settings.runs_dir / config.name
    common = {
        "data_hash": digest,
        "model_dir": out or settings.vision_dir / config.name,
        "resume": not no_resume,
        "progress": progress,
    }
    try:
        if config.hf_model:
            from finetune.recipes import image_text_lora

            result = image_text_lora.run(config, train, val, run_dir, **common)
        else:
            result = run(config, decoder, tokenizer, encoder, train, val, run_dir, **common)
    except TrainingError as exc:
        raise click.ClickException(str(exc)) from None
    m = result.metrics
    _report_training(
        result,
        run_dir,
        rejected,
        as_json,
        f"{m.get('steps')} steps, eval loss {m.get('eval_loss', 0):.3f}, "
        f"{m.get('tokens_per_s', 0):.0f} tokens/s",
    )


def _damage_data(data, demo_dir: Path, progress, max_side: int | None = None):
    """Decoded (picture, DamageExample) train and val pairs of the demo corpus or COCO files,
    the rejected items and the data hash."""
    from finetune.recipes.image_classifier import data_hash
    from finetune.vision_datasets import VisionDataError, damage_examples, decode

    if data.source not in ("demo", "coco"):
        raise VisionDataError(f"task=damage reads data.source=demo or coco, not {data.source}")
    if data.source == "demo":
        train_ex, bad = damage_examples("train", demo_dir=data.demo_dir or demo_dir)
        val_ex, bad_val = damage_examples("val", demo_dir=data.demo_dir or demo_dir)
    else:
        if data.train_file is None:
            raise VisionDataError("data.source=coco needs data.train_file=ANNOTATIONS.json")
        kwargs = {"images_dir": data.images_dir}
        train_ex, bad = damage_examples("train", coco_file=data.train_file, **kwargs)
        val_ex, bad_val = (
            damage_examples("val", coco_file=data.val_file, **kwargs) if data.val_file else ([], [])
        )
    train = decode(train_ex, progress, "train images", max_side)
    val = decode(val_ex, progress, "val images", max_side)
    if not train.items:
        raise VisionDataError("no training image could be read")
    return (
        train.items,
        val.items,
        bad + bad_val + train.rejected + val.rejected,
        data_hash(train_ex),
    )


def _training_data(config, demo_dir: Path, progress):
    from finetune.recipes.image_classifier import data_hash
    from finetune.vision_datasets import (
        VisionDataError,
        classification_examples,
        decode,
        folder_splits,
    )

    data = config.data
    if config.task == "damage":
        return _damage_data(data, demo_dir, progress)
    rejected: list[dict] = []
    if data.source == "folders":
        if data.folder is None:
            raise VisionDataError("data.source=folders needs data.folder=DIR")
        train_ex, val_ex, _ = folder_splits(data.folder, data.per_class, data.seed)
    elif data.source == "jsonl":
        if data.train_file is None:
            raise VisionDataError("task=classify needs --train TRAIN.jsonl (data.train_file)")
        train_ex, rejected = classification_examples(jsonl=data.train_file)
        val_ex = []
        if data.val_file:
            val_ex, bad_val = classification_examples(jsonl=data.val_file)
            rejected += bad_val
    else:
        raise VisionDataError("task=classify reads data.source=jsonl or folders")
    train = decode(train_ex, progress, "train images")
    val = decode(val_ex, progress, "val images")
    rejected += train.rejected + val.rejected
    if not train.items:
        raise VisionDataError("no training image could be read")
    # the hash names the images (paths or data URLs) and their targets, not only the labels
    return train.items, val.items, rejected, data_hash(train_ex)


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
    from finetune.vision_datasets import (
        VisionDataError,
        classification_examples,
        damage_examples,
        decode,
    )
    from finetune.vision_lm import CONFIG_FILE as VLM_CONFIG
    from finetune.vision_models import VisionModelError

    settings = load_settings()
    model_dir = model_dir or settings.vision_dir / "damage-model"
    out = out or settings.runs_dir / f"eval-vision-{task}-{model_dir.name}"
    progress = None if as_json else _tqdm()
    try:
        if task == "classify":
            if test_file is None:
                raise VisionDataError("--task classify needs --test TEST.jsonl")
            examples, rejected = classification_examples(jsonl=test_file)
        else:
            if test_file is None:
                examples, rejected = damage_examples("test", demo_dir=settings.demo_dir)
            else:
                examples, rejected = damage_examples(
                    "test", coco_file=test_file, images_dir=images_dir
                )
        test = decode(examples, progress, "test images")
        rejected += test.rejected
        if task == "classify":
            result = _eval_classify(model_dir, base_dir, test.items, out)
        elif (model_dir / VLM_CONFIG).is_file():
            result = _eval_vlm(settings, model_dir, test.items, progress)
        else:
            result = _eval_damage(model_dir, test.items)
    except (VisionDataError, VisionModelError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    result["rejected"] = rejected
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_vision(task, result, out)


def _tqdm():
    from tqdm import tqdm

    return tqdm


def _timed(function, items):
    outputs, latencies = [], []
    for item in items:
        started = time.perf_counter()
        outputs.append(function(item))
        latencies.append((time.perf_counter() - started) * 1000)
    return outputs, latencies


def _eval_classify(model_dir: Path, base_dir: Path | None, items, out: Path) -> dict:
    from finetune.metrics import latency_stats
    from finetune.vision_metrics import classification_scores, confusion_png, per_class_delta
    from finetune.vision_models import ImageClassifier

    truth = [label for _, label in items]
    report: dict = {}
    for role, directory in (("base", base_dir), ("model", model_dir)):
        if directory is None:
            continue
        classifier = ImageClassifier.load(directory)
        if classifier.task != "classify":
            raise ValueError(
                f"{directory} is a {classifier.task!r} model; use --task {classifier.task}"
            )
        predicted, latencies = _timed(
            lambda p, c=classifier: c.classify([p])[0][0], [p for p, _ in items]
        )
        scores = classification_scores(predicted, truth, classifier.labels)
        scores["latency_ms"] = latency_stats(latencies)
        scores["model"] = classifier.name
        if confusion_png(scores["confusion"], out / f"confusion-{role}.png", classifier.name):
            scores["confusion_png"] = str(out / f"confusion-{role}.png")
        report[role] = scores
    result = {
        "accuracy": report["model"]["accuracy"],
        "per_class": report["model"]["per_class"],
        "n": report["model"]["n"],
        "model": report["model"],
    }
    if "base" in report:
        result["base"] = report["base"]
        result["per_class_delta"] = per_class_delta(
            report["base"]["per_class"], report["model"]["per_class"]
        )
    return result


def _eval_damage(model_dir: Path, items) -> dict:
    from finetune.metrics import latency_stats
    from finetune.vision_metrics import damage_scores
    from finetune.vision_models import ImageClassifier
    from ingest.taxonomy import repair_cost

    classifier = ImageClassifier.load(model_dir)
    if classifier.task != "damage":
        raise ValueError(
            f"{model_dir} is a {classifier.task!r} model; use --task {classifier.task}"
        )
    predicted, latencies = _timed(lambda p: classifier.damages([p])[0], [p for p, _ in items])
    examples = [example for _, example in items]
    scores = damage_scores(
        [[d.model_dump() for d in found] for found in predicted],
        [
            [{"type": d.type, "part": d.part, "severity": d.severity} for d in e.damages]
            for e in examples
        ],
        predicted_overall=[max((d.severity for d in found), key=_rank) for found in predicted],
        true_overall=[e.severity for e in examples],
        predicted_cost=[
            sum(repair_cost(d.part, d.type, d.severity) for d in found) for found in predicted
        ],
        true_cost=[e.cost for e in examples],
    )
    return {**scores, "latency_ms": latency_stats(latencies), "model": classifier.name}


def _eval_vlm(settings, model_dir: Path, items, progress, latency_images: int = 16) -> dict:
    """The vision-language model's answers to every test photo (batched), scored like the
    damage model's; latency from one-photo calls on the first ``latency_images`` photos (a
    call generates ~100 tokens: timing all of them one by one takes minutes on a CPU)."""
    from api.composition import model_store
    from finetune.metrics import latency_stats
    from finetune.vision_lm import VisionLM
    from finetune.vision_metrics import damage_scores

    model = VisionLM.load(model_dir, model_store(settings).load_causal_lm)
    pictures = [p for p, _ in items]
    batch = 16
    starts = range(0, len(pictures), batch)
    if progress is not None:
        starts = progress(starts, desc="answer test photos", unit="batch")
    answers, started = [], time.perf_counter()
    for start in starts:
        answers += model.answer(pictures[start : start + batch])
    seconds = time.perf_counter() - started
    _, latencies = _timed(lambda p: model.answer([p]), pictures[:latency_images])
    parsed = [json.loads(a.text) if a.complete else None for a in answers]
    examples = [example for _, example in items]
    scores = damage_scores(
        [p["damages"] if p else None for p in parsed],
        [
            [{"type": d.type, "part": d.part, "severity": d.severity} for d in e.damages]
            for e in examples
        ],
        predicted_overall=[p["overall_severity"] if p else None for p in parsed],
        true_overall=[e.severity for e in examples],
        predicted_cost=[
            (p["cost_estimate"]["min"] + p["cost_estimate"]["max"]) / 2 if p else None
            for p in parsed
        ],
        true_cost=[e.cost for e in examples],
    )
    return {
        **scores,
        "latency_ms": latency_stats(latencies),
        "latency_images": len(latencies),
        "batched_images_per_s": round(len(pictures) / seconds, 2) if seconds else None,
        "tokens_per_s": round(sum(a.tokens for a in answers) / seconds, 1) if seconds else None,
        "model": model.name,
    }


def _rank(severity: str) -> int:
    from ingest.taxonomy import SEVERITIES

    return SEVERITIES.index(severity)


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


def _echo_precision(*precisions: str) -> None:
    from finetune.trainer import precision_note

    for note in dict.fromkeys(precision_note(p) for p in precisions):
        if note:
            click.echo(note)
