"""What each job kind runs in its worker process (:class:`api.jobs.child.ChildProcess`).

Each function takes the job's parameters (checked at submission by :mod:`api.jobs.kinds`), a
tqdm-compatible ``progress`` bar factory and a ``log`` callback, reads the settings from the
environment the parent passed on, calls the same library function as the matching ``tunegraph``
command, and returns the summary that command prints with ``--json``.

The parameters' own paths were confined at submission (:mod:`api.jobs.kinds`); a recipe's
config can name more files (its YAML, its overrides), so a job's fine-tuning checks the loaded
config against its owner's folders (:func:`api.jobs.confine.check_config`) before it reads any.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api import composition
from api.jobs.confine import Roots, check_config
from api.jobs.store import LOCAL
from api.settings import Settings

Log = Callable[[str], None]
OWNER_ENV = "TUNEGRAPH_JOB_OWNER"  # set by api.jobs.kinds for a job's child


def _runs_dir(settings: Settings) -> Path:
    """Where a compare job writes its report: a key's own folder under the runs, so that no
    key's comparison replaces another's (the local user's and the CLI's: the runs folder)."""
    owner = os.environ.get(OWNER_ENV)
    return settings.runs_dir if owner in (None, LOCAL) else settings.runs_dir / "keys" / owner


def _confine(config: object, settings: Settings) -> None:
    """A job's recipe config may only name its owner's files (the demo's stages are not jobs:
    they run without an owner)."""
    owner = os.environ.get(OWNER_ENV)
    if owner is not None:
        check_config(config, Roots.of(settings, owner))


class NothingIngested(ValueError):
    """Every item of the input was rejected; the message quotes the first problems."""


def _rejected(summary: dict[str, Any], key: str) -> str:
    problems = summary.get(key) or []
    return "; ".join(str(p) for p in problems[:5]) or "nothing to read"


def ingest_manuals(params: dict[str, Any], progress: Callable, log: Log) -> dict[str, Any]:
    from rag.indexing import index_manuals

    settings = Settings.from_env()
    started = time.perf_counter()
    embedder = composition.embedder(settings)
    store = composition.vector_store(settings, params.get("namespace", "manuals"), embedder.dim)
    with progress(desc="chunks embedded", unit="chunk") as chunks:
        report = index_manuals(
            [Path(p) for p in params["paths"]],
            store,
            embedder,
            force=params.get("force", False),
            on_file=lambda f: log(f"ingesting {f}"),
            on_chunks=chunks.update,
        )
    summary = {**report.summary(), "seconds": round(time.perf_counter() - started, 1)}
    if report.rejected and not report.ingested and not report.skipped:
        raise NothingIngested(f"no manual ingested: {_rejected(summary, 'rejected')}")
    return summary


def ingest_claims(params: dict[str, Any], progress: Callable, log: Log) -> dict[str, Any]:
    from ingest.claims import parse_mapping, parse_value_maps, read_claims
    from rag.indexing import load_claims

    settings = Settings.from_env()
    values_file = params.get("values_file")
    report = read_claims(
        Path(params["file"]),
        parse_mapping(params.get("map", [])),
        params.get("date_format"),
        values=parse_value_maps(
            params.get("values", []), Path(values_file) if values_file else None
        ),
        strict=params.get("strict", False),
    )
    summary = report.summary()
    for note in report.notes:
        log(f"note: {note}")
    for name, counts in summary["warnings"].items():
        log(
            f"warning: {name} kept as written: "
            + ", ".join(f"{v!r} x{n}" for v, n in counts.items())
        )
    if not report.claims:
        rows = [f"row {r['row']}: {r['reason']}" for r in summary["rejected"]]
        more = f" (and {len(rows) - 5} more rows)" if len(rows) > 5 else ""
        raise NothingIngested(f"no claim ingested: {' | '.join(rows[:5]) or 'no rows'}{more}")
    with progress(total=len(report.claims), desc="claims embedded", unit="claim") as bar:
        load_claims(
            report.claims,
            composition.claims_database(settings),
            lambda embedder: composition.vector_store(settings, composition.CLAIMS, embedder.dim),
            lambda: composition.embedder(settings),
            on_chunks=bar.update,
        )
    return summary


def ingest_coco(params: dict[str, Any], progress: Callable, log: Log) -> dict[str, Any]:
    from ingest.coco import dataset_file, read_coco, write_dataset

    settings = Settings.from_env()
    annotations = Path(params["annotations"])
    dataset = dataset_file(settings.home / "datasets", params.get("name") or annotations.stem)
    report = read_coco(annotations, Path(params["images"]) if params.get("images") else None)
    summary = report.summary()
    if not report.examples:
        raise NothingIngested(f"{annotations}: no image ingested: {_rejected(summary, 'problems')}")
    return {**summary, "dataset": str(write_dataset(report.examples, dataset))}


def finetune_text(params: dict[str, Any], progress: Callable, log: Log) -> dict[str, Any]:
    from finetune.recipes import text_lora, text_recipe

    settings = Settings.from_env()
    config_path = Path(params["config"]) if params.get("config") else None
    config = text_recipe(config_path, params.get("overrides", []))
    _confine(config, settings)
    result = text_lora.main(
        config,
        composition.workspace(settings),
        resume=params.get("resume", True),
        progress=progress,
        log=log,
    )
    return result.summary()


def finetune_vision(params: dict[str, Any], progress: Callable, log: Log) -> dict[str, Any]:
    from finetune.recipes import vision_recipe

    settings = Settings.from_env()
    paths = {
        key: Path(params[key]) if params.get(key) else None for key in ("config", "train", "val")
    }
    config, main = vision_recipe(
        paths["config"],
        params.get("task"),
        paths["train"],
        paths["val"],
        params.get("overrides", []),
    )
    _confine(config, settings)
    result = main(
        config,
        composition.workspace(settings),
        out=Path(params["out"]) if params.get("out") else None,
        resume=params.get("resume", True),
        progress=progress,
        log=log,
    )
    log(f"model: {result.result.model_dir}")
    log(result.headline)  # the lines `tunegraph finetune vision` ends with
    return result.summary()


COMPARE_STEPS = 1000  # the compare job's progress bar: the whole comparison in steps


def compare(
    params: dict[str, Any],
    progress: Callable,
    log: Log,
    *,
    context_factory: Callable[[Settings], Any] = composition.agent_context,
) -> dict[str, Any]:
    from agents.compare import CompareOptions, run_compare

    settings = Settings.from_env()
    options = CompareOptions(
        **{
            k: params[k]
            for k in ("name", "images", "questions", "claims", "concurrency", "seed")
            if k in params
        },
        **({} if "concurrency" in params else {"concurrency": settings.max_batch_size}),
        prices=Path(params["prices"]) if params.get("prices") else None,
        **composition.compute_billing(
            settings,
            params.get("cpu_per_hour"),
            params.get("gpu_per_hour"),
            prices_file=bool(params.get("prices")),
        ),
    )
    with progress(total=COMPARE_STEPS, desc="compare", unit="comparison") as overall:
        result = run_compare(
            options,
            demo_dir=settings.demo_dir,
            runs_dir=_runs_dir(settings),
            models=composition.trained_models(settings),
            # the engine batches as many requests as the comparison sends at once
            context_factory=lambda: context_factory(
                settings.replace(max_batch_size=options.concurrency)
            ),
            progress=lambda fraction, _: overall.update(
                round(fraction * COMPARE_STEPS) - overall.n
            ),
            bar=progress,
        )
    return result.summary()
