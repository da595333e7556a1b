"""The ``tunegraph`` command line.

Heavy libraries (torch, transformers, PIL) are imported inside the commands that need them, so
``tunegraph --help`` stays instant.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from api import composition
from api.cli.client import client
from api.cli.compare import compare
from api.cli.demo import PROFILES, headline, train_and_compare
from api.cli.finetune import eval_text, finetune_text, models_export
from api.cli.ingest import (
    eval_retrieval,
    ingest,
    ingest_claims,
    ingest_coco,
    ingest_manuals,
    search,
)
from api.cli.options import load_settings
from api.cli.vision import eval_vision, finetune_vision
from api.settings import Settings


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of key: value lines")
    return data


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


class _Main(click.Group):
    """Turns any error that escapes a command into one clear line and exit code 1.

    Commands raise ``click.ClickException`` for the errors they expect; this is the net for the
    rest (a full disk, an unreachable service...). TUNEGRAPH_DEBUG=1 shows the traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("TUNEGRAPH_DEBUG"):
                raise
            raise click.ClickException(
                f"{exc} ({type(exc).__name__}; set TUNEGRAPH_DEBUG=1 to see the traceback)"
            ) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunegraph")
def main() -> None:
    """tunegraph: fine-tuned models versus LangGraph agents over your vehicle data.

    Every setting comes from a TUNEGRAPH_* environment variable; see `tunegraph config show`.
    """


# ---- demo ------------------------------------------------------------------------------------

STAGES = 7  # corpus, models, ingest, retrieval, fine-tune text, fine-tune vision, compare


@main.command()
@click.option(
    "--profile",
    type=click.Choice(["smoke", "quick", "full"]),
    default="quick",
    show_default=True,
    help="how much training and comparing the later stages do (smoke: also a small corpus)",
)
@click.option("--seed", type=int, default=None, help="corpus seed [default: TUNEGRAPH_DEMO_SEED]")
@click.option(
    "--corpus-config",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="YAML with corpus sizes, e.g. configs/demo/corpus.yaml",
)
@click.option("--force", is_flag=True, help="regenerate the corpus even if it is up to date")
@click.option(
    "--skip-models", is_flag=True, help="only generate the corpus (no model loading, no ingest)"
)
@click.pass_context
def demo(
    ctx: click.Context,
    profile: str,
    seed: int | None,
    corpus_config: str | None,
    force: bool,
    skip_models: bool,
) -> None:
    """Run the whole mission on the embedded defaults, from nothing to a comparison report.

    Generate the synthetic demo corpus; load both embedded models (the first SmolLM2 load
    converts its GGUF file and caches it); ingest the manual (PDF, and the scanned pages through
    OCR into their own namespace), the claims and the COCO photos; evaluate retrieval; fine-tune
    the text model and the vision models with the profile's recipes (from scratch); compare the
    fine-tuned and agentic approaches; print where the report is and its headline numbers.

    Profiles: quick (the CPU recipes), smoke (tiny training and a 2-photo comparison: checks
    the chain, leaves weak models under the same names), full (GPU: Llama 3.1 8B QLoRA, a ViT
    damage model, LLaVA-1.5 QLoRA; downloads from the Hugging Face hub).
    """
    from tqdm import tqdm

    from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus

    settings = load_settings()
    values = _read_yaml(corpus_config) if corpus_config else dict(PROFILES[profile].corpus)
    values.setdefault("seed", settings.demo_seed)
    if seed is not None:
        values["seed"] = seed
    try:
        config = DemoCorpusConfig.from_mapping(values, source=corpus_config or "demo")
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--corpus-config") from None
    stage = iter(range(1, STAGES + 1))

    def step(title: str) -> None:
        click.echo(f"[{next(stage)}/{STAGES}] {title}")

    step(f"demo corpus (seed {config.seed}, profile {profile}) -> {settings.demo_dir}")
    started = time.perf_counter()
    corpus = generate_demo_corpus(settings.demo_dir, config, force=force, progress=tqdm)
    counts = corpus.counts
    click.echo(
        f"      manual: {counts['manual']['pages']} PDF pages, "
        f"{sum(counts['manual']['blocks'].values())} blocks, "
        f"{len(counts['manual']['scanned_pages'])} scanned pages, "
        f"{sum(counts['manual']['qa'].values())} QA pairs\n"
        f"      claims: {counts['claims']['rows']} rows, {counts['claims']['fraud']} fraudulent\n"
        f"      photos: {sum(counts['damage']['images'].values())} images, "
        f"{counts['damage']['annotations']} damage annotations\n"
        f"      ({time.perf_counter() - started:.1f} s)"
    )
    if skip_models:
        click.echo("      models, ingest, retrieval, training and compare: skipped (--skip-models)")
        return
    step("embedded models")
    _prepare_models(settings, [settings.text_model, settings.embedding_model])

    demo_dir = settings.demo_dir
    manual = demo_dir / "manual"
    step("ingest: manual PDF -> namespace manuals")
    ctx.invoke(ingest_manuals, paths=(manual / "vehicle_manual.pdf",), namespace="manuals")
    click.echo("      scanned pages (OCR) -> namespace manual_scans")
    ctx.invoke(
        ingest_manuals,
        paths=(manual / "scans",),
        namespace="manual_scans",
        truth=manual / "blocks.jsonl",
    )
    click.echo("      claims")
    ctx.invoke(ingest_claims, file=demo_dir / "claims" / "claims.csv")
    for split in ("train", "val", "test"):
        click.echo(f"      damage photos ({split})")
        ctx.invoke(
            ingest_coco,
            annotations=demo_dir / "damage" / "annotations" / f"{split}.json",
            images=demo_dir / "damage" / "images",
            name=f"demo-damage-{split}",
        )
    step("retrieval on the held-out manual questions")
    ctx.invoke(eval_retrieval, questions=manual / "qa" / "test_retrieval.jsonl")
    timings = train_and_compare(ctx, profile, settings, step)
    report = settings.runs_dir / "demo"
    click.echo(
        f"\nDone in {time.perf_counter() - started:.0f} s (training and compare: {timings})."
    )
    click.echo(f"Report: {report / 'report.html'} (also report.md, report.json, PNG plots)")
    for line in headline(report / "report.json"):
        click.echo(f"  {line}")
    click.echo(
        f"Corpus: {demo_dir / 'README.md'}. Serve both approaches: tunegraph serve, then "
        "tunegraph client assess PHOTO.jpg --approach both"
    )


# ---- config ----------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def config_show(as_json: bool) -> None:
    """Print the effective settings and where each value came from."""
    rows = load_settings().describe()
    if as_json:
        _echo_json({r["name"]: r["value"] for r in rows})
        return
    width = max(len(r["env"]) for r in rows)
    for r in rows:
        click.echo(f"{r['env']:<{width}}  {r['value']:<28} ({r['source']})  {r['help']}")


# ---- models ----------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """Base models and adapters in the model store."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def models_list(as_json: bool) -> None:
    """Show base models and adapters with their size and location."""
    infos = composition.model_store(load_settings()).list_models()
    if as_json:
        _echo_json([info.__dict__ for info in infos])
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
    _prepare_models(settings, list(names) or [settings.text_model, settings.embedding_model])


def _prepare_models(settings: Settings, names: list[str]) -> None:
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


# ---- commands that later issues build --------------------------------------------------------


main.add_command(ingest)
main.add_command(search)


@main.group("eval")
def eval_() -> None:
    """Evaluate retrieval, and base versus fine-tuned models."""


eval_.add_command(eval_retrieval)
eval_.add_command(eval_text)
eval_.add_command(eval_vision)


@main.group()
def finetune() -> None:
    """Fine-tune text (issue #4) and vision (issue #5) models."""


finetune.add_command(finetune_text)
finetune.add_command(finetune_vision)


@main.command()
@click.option("--host", default=None, help="address to bind [default: TUNEGRAPH_HOST]")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="[default: TUNEGRAPH_PORT]"
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="requests served at the same time (threads of the one worker process)",
)
@click.option(
    "--timeout",
    type=click.IntRange(1),
    default=None,
    help="seconds before a stuck worker is restarted [default: TUNEGRAPH_GENERATION_TIMEOUT_S "
    "+ 30]",
)
def serve(host: str | None, port: int | None, threads: int, timeout: int | None) -> None:
    """Serve the Flask API under gunicorn: ONE worker process with --threads threads.

    One process because the models are loaded once per process (a second worker would load
    them all again) and the job manager assumes it is the only process running jobs. The
    models load on the first request that needs them, or when /readyz is first asked.
    """
    from api.server.app import create_app
    from api.server.gunicorn import TIMEOUT_MARGIN_S
    from api.server.gunicorn import serve as run_server

    settings = load_settings()
    host, port = host or settings.host, port or settings.port
    click.echo(f"tunegraph API on http://{host}:{port} (1 worker, {threads} threads)", err=True)
    run_server(
        lambda: create_app(settings=settings),
        host=host,
        port=port,
        threads=threads,
        timeout_s=timeout or settings.generation_timeout_s + TIMEOUT_MARGIN_S,
        log_level=settings.log_level,
    )


main.add_command(client)


main.add_command(compare)


if __name__ == "__main__":
    main()
