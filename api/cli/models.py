"""``tunegraph models ...``: base models and adapters in the model store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from api import composition
from api.cli.options import load_settings
from api.settings import Settings


@click.group()
def models() -> None:
    """Base models and adapters in the model store."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def models_list(as_json: bool) -> None:
    """Show base models and adapters with their size and location."""
    infos = composition.model_store(load_settings()).list_models()
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=2, default=str))
        return
    click.echo(f"{'NAME':<24} {'KIND':<10} {'SOURCE':<9} {'SIZE':>9}  LOCATION")
    for info in infos:
        size = f"{info.size_bytes / 1e6:.1f} MB" if info.size_bytes is not None else "-"
        note = f"  ({info.note})" if info.note else ""
        click.echo(
            f"{info.name:<24} {info.kind:<10} {info.source:<9} {size:>9}  {info.location}{note}"
        )


@models.command("prepare")
@click.argument("names", nargs=-1)
def models_prepare(names: tuple[str, ...]) -> None:
    """Load models once so later loads hit the cache (default: the configured text and
    embedding models)."""
    settings = load_settings()
    prepare_models(settings, list(names) or [settings.text_model, settings.embedding_model])


def prepare_models(settings: Settings, names: list[str]) -> None:
    from finetune.model_store import ModelNotFoundError

    store = composition.model_store(settings)
    for name in names:
        try:
            kind = store.resolve(name).kind
            started = time.perf_counter()
            if kind == "embedding":
                vector = store.load_embedder(name).encode(["brake caliper torque"])[0]
                detail = f"{len(vector)}-dim embeddings"
            else:
                model, _ = store.load_causal_lm(name)
                detail = f"{type(model).__name__}, {model.num_parameters() / 1e6:.0f}M parameters"
        except ModelNotFoundError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"      {name}: {detail}, loaded in {time.perf_counter() - started:.1f} s")


@models.command("export")
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
