"""``tunegraph finetune text``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from api import composition
from api.cli_support import load_settings


@click.command("text", context_settings={"ignore_unknown_options": True})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML recipe, e.g. configs/text/smollm2_quick.yaml [default: built-in defaults]",
)
@click.option(
    "--no-resume", is_flag=True, help="start over instead of resuming the last checkpoint"
)
@click.option("--json", "as_json", is_flag=True, help="print the final metrics as JSON")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def finetune_text(
    config_path: Path | None, no_resume: bool, as_json: bool, overrides: tuple[str, ...]
) -> None:
    """LoRA (QLoRA on CUDA) on a causal LM; KEY=VALUE pairs override the YAML (train.lr=1e-4).

    Checkpoints and metrics.jsonl go to TUNEGRAPH_HOME/runs/NAME; the adapter, its tokenizer
    (chat template) and a manifest to TUNEGRAPH_HOME/adapters/NAME. An interrupted run resumes
    exactly where its last checkpoint left off.
    """
    from tqdm import tqdm

    from finetune.config import ConfigError, load_config
    from finetune.datasets import (
        DatasetError,
        build_dataset,
        chat_token_counter,
        examples_from_qa,
        read_sft_jsonl,
        write_jsonl,
    )
    from finetune.model_store import ModelNotFoundError
    from finetune.recipes.text_lora import TextRecipeConfig, TrainingError, run
    from ingest.records import QAPair

    settings = load_settings()
    try:
        config = load_config(TextRecipeConfig, config_path, overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        model, tokenizer = composition.model_store(settings).load_causal_lm(config.base_model)
    except ModelNotFoundError as exc:
        raise click.ClickException(str(exc)) from None

    data = config.data
    try:
        if data.source == "demo":
            qa_dir = (data.demo_dir or settings.demo_dir) / "manual" / "qa"
            if not qa_dir.is_dir():
                raise DatasetError(f"{qa_dir} does not exist: run `tunegraph demo` first.")
            pairs = [
                QAPair(**json.loads(line))
                for split_name in ("train", "val")
                for line in (qa_dir / f"{split_name}.jsonl").read_text("utf-8").splitlines()
            ]
            examples, rejected = examples_from_qa(pairs), []
        else:
            if data.train_file is None:
                raise DatasetError("data.source=jsonl needs data.train_file=PATH")
            examples, rejected = read_sft_jsonl(data.train_file)
        count = chat_token_counter(tokenizer)
        report = build_dataset(
            examples,
            count_tokens=count,
            max_length=config.train.max_length,
            val_fraction=0.0 if data.val_file else data.val_fraction,
            max_ratio=data.max_ratio,
            seed=config.train.seed,
        )
        if data.val_file:
            report.val, val_rejected = read_sft_jsonl(data.val_file)
            rejected += val_rejected
        report.rejected = rejected
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from None

    run_dir = settings.runs_dir / config.name
    data_hash = write_jsonl(report.train, run_dir / "data" / "train.jsonl")
    write_jsonl(report.val, run_dir / "data" / "val.jsonl")
    summary = report.summary()
    if not as_json:
        click.echo(
            f"data: {summary['train']} train / {summary['val']} val examples; train per kind "
            f"{summary['train_per_kind']} (before balancing {summary['train_per_kind_before_balancing']}); "
            f"{len(report.too_long)} too long, {len(rejected)} rejected lines"
        )
    try:
        result = run(
            config,
            model,
            tokenizer,
            report.train,
            report.val,
            run_dir,
            data_hash=data_hash,
            adapter_dir=settings.adapters_dir / config.name,
            resume=not no_resume,
            progress=None if as_json else tqdm,
        )
    except TrainingError as exc:
        raise click.ClickException(str(exc)) from None
    output = {
        "adapter": str(result.adapter_dir),
        "run_dir": str(run_dir),
        "data": summary,
        **result.metrics,
    }
    if as_json:
        click.echo(json.dumps(output, indent=2, default=str))
    else:
        m = result.metrics
        click.echo(
            f"adapter: {result.adapter_dir}\n{m['steps']} steps, train loss {m['train_loss']:.3f}, "
            f"eval loss {m['eval_loss']:.3f}, {m['tokens_per_s']:.0f} tokens/s"
        )
