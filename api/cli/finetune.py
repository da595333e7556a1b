"""``tunegraph finetune text``."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click

from api import composition
from api.cli.options import load_settings


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
    from finetune.datasets import DatasetError
    from finetune.model_store import ModelNotFoundError
    from finetune.recipes import text_lora
    from finetune.trainer import TrainingError

    settings = load_settings()
    try:
        config = load_config(text_lora.TextRecipeConfig, config_path, overrides)
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
        )


@click.command("text")
@click.option(
    "--adapter",
    default="manual-lora",
    show_default=True,
    help="adapter name under TUNEGRAPH_HOME/adapters",
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="QA JSONL (question, answer, kind) [default: the demo's test questions]",
)
@click.option(
    "--blocks",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="manual blocks.jsonl whose numbers count as known [default: the demo's]",
)
@click.option(
    "--limit", type=click.IntRange(1), default=None, help="evaluate a seeded sample of N questions"
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["SPEC", "PROCEDURE", "EXPLANATION", "WIRING", "TROUBLESHOOTING"]),
    multiple=True,
    help="only questions of this block kind (repeatable) [default: all]",
)
@click.option(
    "--retrieval/--no-retrieval",
    default=True,
    show_default=True,
    help="also answer with the top-3 manual chunks",
)
@click.option("--max-new-tokens", type=click.IntRange(1, 2048), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def eval_text(
    adapter: str,
    questions: Path | None,
    blocks: Path | None,
    limit: int | None,
    kinds: tuple[str, ...],
    retrieval: bool,
    max_new_tokens: int,
    batch_size: int,
    as_json: bool,
) -> None:
    """Base and fine-tuned model (each with and without retrieval) on held-out questions.

    SPEC: exact match of the value (numbers and units normalised); PROCEDURE/EXPLANATION and the
    rest: ROUGE-L; plus the share of answers that stop with EOS, the rate of numbers found in no
    manual block, and latency. Writes report.json and report.md to TUNEGRAPH_HOME/runs/eval-text.
    """
    from tqdm import tqdm

    from finetune.datasets import DatasetError
    from finetune.evaluation import evaluate_text, markdown_table
    from finetune.model_store import ModelNotFoundError

    settings = load_settings()
    questions = questions or settings.demo_dir / "manual" / "qa" / "test.jsonl"
    blocks = blocks or settings.demo_dir / "manual" / "blocks.jsonl"
    for path, hint in ((questions, "--questions"), (blocks, "--blocks")):
        if not path.is_file():
            raise click.ClickException(
                f"{path} does not exist: run `tunegraph demo` or pass {hint}."
            )
    search = None
    if retrieval:
        from api.cli.ingest import _retriever

        try:
            search = functools.partial(_top_chunks, _retriever("manuals"))
        except click.ClickException as exc:
            if not as_json:
                click.echo(f"retrieval skipped: {exc.message}")
    report_dir = settings.runs_dir / "eval-text"
    try:
        results = evaluate_text(
            composition.model_store(settings),
            adapter,
            base_model=settings.text_model,
            questions=questions,
            blocks=blocks,
            report_dir=report_dir,
            kinds=kinds,
            limit=limit,
            search=search,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=functools.partial(tqdm, disable=as_json),
            log=None if as_json else click.echo,
        )
    except (DatasetError, ModelNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(markdown_table(results))
        click.echo(f"\nreport: {report_dir / 'report.md'}")


def _top_chunks(retriever: Any, question: str) -> list[str]:
    """The texts of the three manual chunks that best match ``question``."""
    return [hit.text for hit in retriever.search(question, 3)]


@click.command("export")
@click.argument("adapter")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output folder [default: TUNEGRAPH_HOME/exports/ADAPTER]",
)
@click.option(
    "--gguf",
    type=click.Choice(["f16", "f32"]),
    default=None,
    help="also write model-F16|F32.gguf for llama.cpp / Ollama (Llama-architecture models)",
)
def models_export(adapter: str, out: Path | None, gguf: str | None) -> None:
    """Merge ADAPTER (a name under TUNEGRAPH_HOME/adapters, or a folder) into a full-precision
    copy of its base model and save it as safetensors with its tokenizer.

    The result loads like any local model (TUNEGRAPH_TEXT_MODEL=PATH) and serves from vLLM;
    with --gguf the same weights go into one GGUF file for `llama-server -m FILE` or an Ollama
    Modelfile (`FROM ./model-f16.gguf`).
    """
    from finetune.export import merge_adapter
    from finetune.gguf_export import GGUFExportError
    from finetune.model_store import ModelNotFoundError

    settings = load_settings()
    adapter_dir = Path(adapter) if Path(adapter).is_dir() else settings.adapters_dir / adapter
    target = out or settings.home / "exports" / adapter_dir.name
    try:
        result = merge_adapter(composition.model_store(settings), adapter_dir, target, gguf=gguf)
    except (ModelNotFoundError, GGUFExportError) as exc:
        raise click.ClickException(str(exc)) from None
    size = sum(p.stat().st_size for p in result.rglob("*") if p.is_file())
    click.echo(f"merged model: {result} ({size / 1e6:.0f} MB)")
    for file in sorted(result.glob("*.gguf")):
        click.echo(f"GGUF: {file} ({file.stat().st_size / 1e6:.0f} MB)")
