"""``tunegraph demo``: the whole mission on the embedded defaults, from nothing to a report.

The stages are the commands a user would run by hand (``tunegraph ingest ...``, ``eval
retrieval``, ``finetune text|vision``, ``compare``), run with a profile's configs and overrides
(``configs/demo/PROFILE.yaml``). The demo trains from scratch each time (no resume): a smoke
run's tiny checkpoints must never be resumed by a quick run, which shares their names.

On a CPU with two or more cores the CPU profiles train the vision models (the damage model, then
the vision-language model that reads it) in a second process while this one trains the text
model, the threads split between them, so that both cores stay busy; whether that gets more done
than one after the other is what ``benchmarks/side_by_side.py`` measures. The second process is
the jobs' worker (:class:`api.jobs.child.ChildProcess` running ``api.jobs.worker``).

Over 400 lines on purpose: it is one command, ``tunegraph demo``; its profile, its seven stages and
the two-process training they run are read together, and every helper below serves only it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click

from api.cli.compare import compare
from api.cli.eval import eval_retrieval
from api.cli.finetune import finetune_text, finetune_vision
from api.cli.ingest import ingest_claims, ingest_coco, ingest_manuals
from api.cli.models import prepare_models
from api.cli.options import find_config_file, load_settings
from api.jobs.child import ChildChain
from api.settings import Settings
from finetune.config import ConfigError, shipped_config, shipped_config_names

PROFILE_NAMES = ("smoke", "quick", "full")


@dataclass(frozen=True)
class DemoProfile:
    """One ``configs/demo/NAME.yaml``: the recipes the demo trains (shipped configs, by their
    names under ``configs/``) and their KEY=VALUE overrides, the comparison's size, corpus sizes
    and whether vision trains in a second process."""

    text_config: str
    damage_config: str
    vlm_config: str
    text: tuple[str, ...] = ()
    damage: tuple[str, ...] = ()
    vlm: tuple[str, ...] = ()
    # the comparison: held-out photos, manual questions (each asked in the 5 chat modes) and
    # test claims, each a count or "all" (the whole test split); calls in flight at once
    images: int | str = 4
    questions: int | str = 3
    claims: int | str = 40
    concurrency: int | None = None
    corpus: Mapping[str, int] = field(default_factory=dict)
    max_tokens: int | None = 160
    side_by_side: bool = True

    @classmethod
    def from_yaml(cls, path: Path) -> DemoProfile:
        data = _read_yaml(path)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise click.ClickException(f"{path}: unknown key(s) {', '.join(unknown)}")
        for key in ("text", "damage", "vlm"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)


def load_profile(name: str) -> DemoProfile:
    """The shipped demo profile ``name`` (``configs/demo/NAME.yaml``, installed with tunegraph)."""
    try:
        path = shipped_config(f"demo/{name}.yaml")
    except ConfigError:
        profiles = [Path(n).stem for n in shipped_config_names("demo")]
        raise click.ClickException(
            f"demo profile {name!r} is not shipped with this installation of tunegraph; it "
            f"ships {', '.join(p for p in profiles if p != 'corpus') or 'none'}"
        ) from None
    return DemoProfile.from_yaml(path)


def recipe(name: str) -> Path:
    """A profile's recipe: a shipped config by its name under ``configs/``."""
    try:
        return shipped_config(name)
    except ConfigError as exc:  # it lists the shipped configs
        raise click.ClickException(str(exc)) from None


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of key: value lines")
    return data


STAGES = 7  # corpus, models, ingest, retrieval, fine-tune text, fine-tune vision, compare


@click.command()
@click.option(
    "--profile",
    type=click.Choice(PROFILE_NAMES),
    default="quick",
    show_default=True,
    help="how much training and comparing the later stages do (smoke: also a small corpus)",
)
@click.option("--seed", type=int, default=None, help="corpus seed [default: TUNEGRAPH_DEMO_SEED]")
@click.option(
    "--corpus-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    callback=find_config_file,
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
    corpus_config: Path | None,
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
    values = _read_yaml(corpus_config) if corpus_config else dict(load_profile(profile).corpus)
    values.setdefault("seed", settings.demo_seed)
    if seed is not None:
        values["seed"] = seed
    try:
        config = DemoCorpusConfig.from_mapping(values, source=str(corpus_config or "demo"))
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
    prepare_models(settings, [settings.text_model, settings.embedding_model])

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


def train_and_compare(ctx: click.Context, profile_name: str, settings: Settings, step) -> dict:
    """Stages 5-7 of the demo; ``step(title)`` prints a stage header. Returns the timings."""
    profile = load_profile(profile_name)
    timings: dict[str, float] = {}

    def timed(stage: str, function, **kwargs) -> None:
        started = time.perf_counter()
        ctx.invoke(function, **kwargs)
        timings[stage] = round(time.perf_counter() - started, 1)
        click.echo(f"      ({timings[stage]:.0f} s)")

    def train(stage: str, command, config: str, overrides: tuple[str, ...], **extra) -> None:
        timed(
            stage,
            command,
            config_path=recipe(config),
            no_resume=True,
            as_json=False,
            overrides=overrides,
            **extra,
        )

    vision = {"task": None, "train_file": None, "val_file": None, "out": None}
    threads = torch_threads()
    if profile.side_by_side and threads >= 2:
        logs = settings.runs_dir / "demo-training"
        logs.mkdir(parents=True, exist_ok=True)
        own = threads // 2
        damage = (
            "damage_model",
            VISION_STAGE,
            vision_params(profile.damage_config, profile.damage),
        )
        vlm = ("vision_lm", VISION_STAGE, vision_params(profile.vlm_config, profile.vlm))
        # a vision-language model with its own encoder needs no damage model: the damage model
        # then trains after the text model, and the longer VLM alone in the second process
        after_text = not reads_damage_model(profile)
        side = ChildChain(
            [vlm] if after_text else [damage, vlm],
            logs,
            threads=threads - own,
            env=settings.to_env(),
        )
        beside = (
            f"the vision-language model ({profile.vlm_config}); after the text model, the "
            f"damage model ({profile.damage_config})"
            if after_text
            else f"the damage model ({profile.damage_config}), then the vision-language model "
            f"({profile.vlm_config})"
        )
        step(f"fine-tune text ({profile.text_config}); beside it, in a second process: {beside}")
        click.echo(
            f"      vision logs: {logs}/vision_lm.log"
            + ("" if after_text else f", {logs}/damage_model.log")
        )
        started = time.perf_counter()
        side.start()
        try:
            with torch_threads_set(own):
                train("text", finetune_text, profile.text_config, profile.text)
                if after_text:
                    click.echo(f"      then the damage model ({profile.damage_config})")
                    train(
                        "damage_model",
                        finetune_vision,
                        profile.damage_config,
                        profile.damage,
                        **vision,
                    )
            step("fine-tune vision: the second process")
            side.wait(lambda line: click.echo(f"      {line}"))
        except BaseException:
            side.stop()
            raise
        timings.update(side.timings)
        timings["training_wall"] = round(time.perf_counter() - started, 1)
        if side.failed:
            name, log = side.failed
            raise click.ClickException(
                f"the {name} stage failed; its log: {log}\n" + "\n".join(last_lines(log, 15))
            )
        for name in side.results:
            for line in last_lines(logs / f"{name}.log", 2):
                click.echo(f"      {line}")
            click.echo(f"      ({name}: {side.timings[name]:.0f} s)")
    else:
        step(f"fine-tune text ({profile.text_config})")
        train("text", finetune_text, profile.text_config, profile.text)
        step(f"fine-tune vision: the damage model ({profile.damage_config})")
        train("damage_model", finetune_vision, profile.damage_config, profile.damage, **vision)
        click.echo(f"      and the vision-language model ({profile.vlm_config})")
        train("vision_lm", finetune_vision, profile.vlm_config, profile.vlm, **vision)
    step(
        f"compare on {profile.images} photos, {profile.questions} questions x 5 chat modes and "
        f"{profile.claims} test claims"
    )
    timed(
        "compare",
        compare,
        name="demo",
        images=profile.images,
        questions=profile.questions,
        claims=profile.claims,
        concurrency=profile.concurrency,
        prices=None,
        max_tokens=profile.max_tokens,
        seed=0,
        as_json=False,
    )
    return timings


VISION_STAGE = "api.jobs.worker:finetune_vision"


def reads_damage_model(profile: DemoProfile) -> bool:
    """Whether the profile's vision-language model reads the damage model (its encoder, or
    its detections), so that the damage model must be trained first."""
    from finetune.config import load_config
    from finetune.recipes.vision_lm_config import VisionLMConfig

    try:
        config = load_config(VisionLMConfig, recipe(profile.vlm_config), list(profile.vlm))
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(f"{profile.vlm_config}: {exc}") from None
    return config.reads_damage_model


def vision_params(config: str, overrides: Sequence[str]) -> dict[str, Any]:
    """A ``finetune-vision`` job's parameters for ``config``, from scratch."""
    return {"config": str(recipe(config)), "overrides": list(overrides), "resume": False}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads_set(threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` inside the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def last_lines(log: Path, count: int) -> list[str]:
    """The last ``count`` non-empty lines of a log, progress-bar redraws (``\\r``) split out.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.log"
    >>> _ = path.write_text("a\\nstep 1/3\\rstep 2/3\\rstep 3/3\\ndone\\n\\n")
    >>> last_lines(path, 2)
    ['step 3/3', 'done']
    """
    try:
        text = log.read_text("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
    return [line for line in lines if line][-count:]


def headline(report_json: Path) -> list[str]:
    """The report's headline numbers, one line each."""
    report = json.loads(report_json.read_text("utf-8"))
    lines = []
    for approach, scores in report.get("assessment_scores", {}).items():
        latency = scores.get("latency_ms", {}).get("p50")
        lines.append(
            f"assessment {approach}: damage-type F1 (macro) {scores.get('type_f1_macro')}, "
            f"invalid {scores.get('invalid_rate')}, p50 "
            + (f"{latency / 1000:.1f} s" if latency else "n/a")
        )
    for mode, scores in report.get("chat_scores", {}).items():
        latency = scores.get("latency_ms", {}).get("p50")
        lines.append(
            f"chat {mode}: SPEC exact match {scores.get('spec_exact_match')}, ROUGE-L "
            f"{scores.get('rouge_l')}, p50 " + (f"{latency / 1000:.1f} s" if latency else "n/a")
        )
    return lines
