"""``tunegraph finetune text``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

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
    from finetune.datasets import (
        DatasetError,
        build_dataset,
        chat_token_counter,
        demo_examples,
        read_blocks,
        read_sft_jsonl,
        spec_paraphrases,
        write_jsonl,
    )
    from finetune.model_store import ModelNotFoundError
    from finetune.recipes.text_lora import TextRecipeConfig, run
    from finetune.trainer import TrainingError, precision_note

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
        val_examples = None
        if data.source == "demo":
            examples, val_examples = demo_examples(data.demo_dir or settings.demo_dir)
            rejected = []
        else:
            if data.train_file is None:
                raise DatasetError("data.source=jsonl needs data.train_file=PATH")
            examples, rejected = read_sft_jsonl(data.train_file)
            if data.val_file:
                val_examples, val_rejected = read_sft_jsonl(data.val_file)
                rejected += val_rejected
        extra = []
        if data.spec_paraphrases:
            blocks_file = data.blocks_file
            if blocks_file is None and data.source == "demo":
                blocks_file = (data.demo_dir or settings.demo_dir) / "manual" / "blocks.jsonl"
            if blocks_file is None:
                raise DatasetError(
                    "data.spec_paraphrases needs the manual's spec rows: add "
                    "data.blocks_file=PATH (a blocks.jsonl written by `tunegraph ingest`)"
                )
            extra = spec_paraphrases(
                read_blocks(blocks_file), data.spec_paraphrases, config.train.seed
            )
        report = build_dataset(
            examples,
            count_tokens=chat_token_counter(tokenizer),
            val_examples=val_examples,
            max_length=config.train.max_length,
            val_fraction=data.val_fraction,
            max_ratio=data.max_ratio,
            max_val=data.max_val_examples,
            seed=config.train.seed,
            extra_train=extra,
        )
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
            f"{summary['train_per_kind']} (before balancing {summary['train_per_kind_before_balancing']}; "
            f"{summary['added_after_balancing']} added after it); "
            f"{len(report.too_long)} too long, {len(rejected)} rejected lines"
        )
        note = precision_note(config.train.precision)
        if note:
            click.echo(note)
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
            # a disabled bar still counts steps: a job's child process reports them (job_process)
            progress=functools.partial(tqdm, disable=as_json),
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
    import random
    from contextlib import nullcontext

    from tqdm import tqdm

    from finetune.evaluation import generate, markdown_table, prompt_messages, score
    from finetune.metrics import known_numbers
    from finetune.model_store import ModelNotFoundError
    from ingest.records import QAPair

    settings = load_settings()
    questions = questions or settings.demo_dir / "manual" / "qa" / "test.jsonl"
    blocks = blocks or settings.demo_dir / "manual" / "blocks.jsonl"
    for path, hint in ((questions, "--questions"), (blocks, "--blocks")):
        if not path.is_file():
            raise click.ClickException(
                f"{path} does not exist: run `tunegraph demo` or pass {hint}."
            )
    try:
        items = [
            QAPair(**json.loads(line))
            for line in questions.read_text("utf-8").splitlines()
            if line.strip()
        ]
        block_texts = [
            json.loads(line)["text"]
            for line in blocks.read_text("utf-8").splitlines()
            if line.strip()
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise click.ClickException(f"cannot read the questions or blocks: {exc}") from None
    if kinds:
        items = [q for q in items if q.kind in kinds]
        if not items:
            raise click.ClickException(f"no {'/'.join(kinds)} question in {questions}")
    if limit and limit < len(items):
        items = sorted(random.Random(0).sample(items, limit), key=lambda q: q.id)
    known = known_numbers(block_texts)

    store = composition.model_store(settings)
    try:
        base_name = settings.text_model
        adapter_dir = settings.adapters_dir / adapter
        if (adapter_dir / "tunegraph-manifest.json").exists():
            base_name = json.loads((adapter_dir / "tunegraph-manifest.json").read_text())[
                "base_model"
            ]
        model, tokenizer = store.load_causal_lm(base_name)
    except ModelNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    variants: list[tuple[str, object]] = [("base", None)]
    if (adapter_dir / "adapter_config.json").exists():
        from peft import PeftModel
        from transformers import AutoTokenizer

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        tokenizer = AutoTokenizer.from_pretrained(
            str(adapter_dir)
        )  # the template it was trained with
        variants.append((f"finetuned ({adapter})", adapter_dir))
    elif not as_json:
        click.echo(
            f"no adapter {adapter!r} in {settings.adapters_dir}: evaluating the base model only"
        )

    contexts: list[list[str]] = [[] for _ in items]
    if retrieval:
        from api.cli.ingest import _retriever

        try:
            retriever = _retriever("manuals")
            contexts = [[h.text for h in retriever.search(q.question, 3)] for q in items]
        except click.ClickException as exc:
            retrieval = False
            if not as_json:
                click.echo(f"retrieval skipped: {exc.message}")
    results = {}
    for name, adapter_path in variants:
        for with_context in (False, True) if retrieval else (False,):
            label = name + (" + retrieval" if with_context else "")
            conversations = [
                prompt_messages(q, c if with_context else ())
                for q, c in zip(items, contexts, strict=True)
            ]
            base_only = (
                model.disable_adapter()
                if adapter_path is None and len(variants) > 1
                else nullcontext()
            )
            with base_only, tqdm(total=len(items), desc=label, unit="q", disable=as_json) as bar:
                answers = generate(
                    model,
                    tokenizer,
                    conversations,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    progress=bar.update,
                )
            results[label] = score(items, answers, known)
    report_dir = settings.runs_dir / "eval-text"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    (report_dir / "report.md").write_text(
        f"# Text evaluation ({len(items)} questions)\n\n{table}\n"
    )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(table)
        click.echo(f"\nreport: {report_dir / 'report.md'}")


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
