"""``tunegraph models ...``: base models and adapters in the model store."""

from __future__ import annotations

import json
import time

import click

from api import composition
from api.cli.finetune import models_export
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


models.add_command(models_export)


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
