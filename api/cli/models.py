"""``tunegraph models ...``: base models and adapters in the model store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from api import composition
from api.cli.options import load_settings
from api.settings import Settings, env_name

ENGINE_EXTRA = "pip install -e '.[engine]'"


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


@models.command("build")
@click.option(
    "--adapter",
    "adapter_names",
    multiple=True,
    metavar="NAME",
    help="also build this adapter under TUNEGRAPH_HOME/adapters (repeatable)",
)
@click.option(
    "--all-adapters",
    is_flag=True,
    help="also build every adapter under TUNEGRAPH_HOME/adapters trained on the served base",
)
def models_build(adapter_names: tuple[str, ...], all_adapters: bool) -> None:
    """Build the inference engine's models ahead of time: the configured text model and the
    served adapter (what `tunegraph serve` loads), so the first request does not wait.

    Builds are cached under TUNEGRAPH_HOME/models/onnx, keyed by a hash of the weights and the
    engine settings: one found complete there is reused; a changed adapter, a new engine or a
    damaged build is built again. With adapters the base is built with LoRA slots.
    """
    from finetune import onnx_build

    settings = load_settings()
    base, adapters = composition.served_text_model(settings)
    adapters |= _requested_adapters(settings, base, adapter_names, all_adapters)
    if onnx_build.engine_version() is None:
        raise click.ClickException(_engine_missing(f"{onnx_build.ENGINE} is not installed"))
    if settings.llm_base_url:
        click.echo(f"note: the server does not use these builds: {env_name('llm_base_url')} is set")
    elif settings.engine == "transformers":
        click.echo(f"note: the server does not use these builds: {env_name('engine')}=transformers")
    try:
        build_engine_models(settings, base, adapters)
    except ImportError as exc:  # a partial install: the engine without onnx or onnxruntime
        raise click.ClickException(_engine_missing(str(exc))) from None
    except onnx_build.EngineUnavailable as exc:
        raise click.ClickException(
            f"{exc}\nthe server runs the text model on transformers instead "
            f"({env_name('engine')}=auto; with {env_name('engine')}=onnx it refuses to start)"
        ) from None


def build_engine_models(settings: Settings, base: str, adapters: dict[str, Path]) -> None:
    """Build (or find in the cache) text model ``base`` and ``adapters`` (name -> folder) as
    the server loads them, with a progress bar and one line per item saying what happened."""
    from tqdm import tqdm

    from finetune import onnx_build
    from finetune.model_store import ModelNotFoundError

    store = composition.model_store(settings)
    cache = composition.engine_cache_dir(settings)
    slots = ", LoRA slots" if adapters else ""
    with tqdm(total=1 + len(adapters), desc="engine builds", unit="model", disable=None) as bar:

        def log(line: str) -> None:
            bar.write(f"      {line}")

        def step(label: str, make: Callable[[], Any]) -> Any:
            started = time.perf_counter()
            made = make()  # an OnnxBuild or an AdapterBuild
            state = "built" if made.built else "found in the cache"
            bar.write(f"{label}: {state} in {time.perf_counter() - started:.1f} s: {made.path}")
            bar.update()
            return made

        def base_build() -> onnx_build.OnnxBuild:
            try:
                source = store.checkpoint_dir(base)
            except ModelNotFoundError as exc:
                raise click.ClickException(str(exc)) from None
            if source is None:
                raise click.ClickException(
                    f"{base!r} is not a local checkpoint folder (a hub id or a .gguf file): the "
                    "engine builds from a safetensors folder, so the server runs it on "
                    f"transformers; set {env_name('text_model')} to an embedded model or a "
                    "local folder to use the engine"
                )
            return onnx_build.build_model(source, cache, lora=bool(adapters), log=log)

        build = step(f"text model {base} (fp32{slots})", base_build)
        for name, folder in adapters.items():
            step(
                f"adapter {name}",
                lambda folder=folder: onnx_build.build_adapter(folder, build, cache, log),
            )


def _requested_adapters(
    settings: Settings, base: str, names: tuple[str, ...], every: bool
) -> dict[str, Path]:
    """The adapters under ``settings.adapters_dir`` named on the command line (all with
    ``every``) that load on ``base``; a usage error for an unknown or mismatched name."""
    from agents.backends.base import GenerationError
    from agents.backends.decoding import check_adapter

    infos = composition.model_store(settings).list_models()
    available = {info.name: Path(info.location) for info in infos if info.kind == "adapter"}
    if unknown := [name for name in names if name not in available]:
        listed = ", ".join(available) or "none yet: train one with `tunegraph finetune text`"
        raise click.BadParameter(
            f"no adapter {', '.join(map(repr, unknown))} under {settings.adapters_dir} "
            f"(adapters: {listed})",
            param_hint="'--adapter'",
        )
    chosen = {}
    for name in available if every else names:
        try:
            check_adapter(name, available[name], base)
        except GenerationError as exc:
            if not every:
                raise click.BadParameter(str(exc), param_hint="'--adapter'") from None
            click.echo(f"skipped: {exc}")
            continue
        chosen[name] = available[name]
    return chosen


def _engine_missing(reason: str) -> str:
    return (
        f"the inference engine is not available ({reason}); install the engine extra with "
        f"{ENGINE_EXTRA}. Without it the server runs the text model on transformers "
        f"({env_name('engine')}=auto)."
    )


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
