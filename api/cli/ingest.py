"""``tunegraph ingest manuals|claims|coco`` and ``tunegraph search``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from api import composition
from api.cli.options import load_settings, manual_retriever, namespace_option


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


def _rejections(
    rejected: list[dict[str, Any]], limit: int = 20, line=None, more: str = "more"
) -> list[str]:
    """One line per rejected record (``line`` writes it), the first ``limit`` of them."""
    line = line or (lambda r: f"  rejected {', '.join(f'{k} {v}' for k, v in r.items())}")
    lines = [line(r) for r in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"  ... and {len(rejected) - limit} {more} (see --json)")
    return lines


@click.group()
def ingest() -> None:
    """Ingest manuals, claims and COCO damage annotations."""


@ingest.command("manuals")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@namespace_option
@click.option("--force", is_flag=True, help="re-ingest files even if their content is unchanged")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ground-truth blocks.jsonl: report block-kind precision/recall of what was ingested",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def ingest_manuals(
    paths: tuple[Path, ...], namespace: str, force: bool, truth: Path | None, as_json: bool
) -> None:
    """Parse manuals (PDF, HTML, Markdown, text, PNG/JPEG scans) into the manual index.

    Directories are searched for supported files. Unchanged files are skipped; the whole ingest
    is one transaction, so an interrupted run leaves the previous index in place.
    """
    from tqdm import tqdm

    from ingest.manuals import ManualError, kind_scores_against
    from rag.indexing import index_manuals

    settings = load_settings()
    started = time.perf_counter()
    embedder = composition.embedder(settings)
    store = composition.vector_store(settings, namespace, embedder.dim)
    with (
        tqdm(desc="files", unit="file", disable=as_json) as files,
        tqdm(desc="chunks embedded", unit="chunk", disable=as_json) as chunks,
    ):
        try:
            report = index_manuals(
                list(paths),
                store,
                embedder,
                force=force,
                on_file=lambda f: (files.update(1), files.set_postfix_str(f.name)),
                on_chunks=chunks.update,
            )
        except ManualError as exc:
            raise click.ClickException(str(exc)) from None
    summary = {**report.summary(), "seconds": round(time.perf_counter() - started, 1)}
    scores_lines = []
    if truth:
        try:
            summary["kind_scores"] = kind_scores_against(report.blocks, truth)
        except ManualError as exc:
            raise click.ClickException(str(exc)) from None
        scores_lines = [
            f"  {kind:<16} precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
            f"({s['predicted']} found, {s['truth']} expected)"
            for kind, s in summary["kind_scores"].items()
        ]
    _emit(
        summary,
        as_json,
        [
            f"ingested {len(report.ingested)} file(s), {report.chunks} chunks "
            f"({', '.join(f'{k} {v}' for k, v in sorted(report.kinds.items())) or 'none'}); "
            f"skipped {len(report.skipped)} unchanged; rejected {len(report.rejected)}; "
            f"{summary['seconds']} s",
            *_rejections(report.rejected),
            *(["block kinds against the ground truth:", *scores_lines] if truth else []),
            f"index: {store.count()} chunks in total",
        ],
    )
    if report.rejected and not report.ingested and not report.skipped:
        sys.exit(1)


@ingest.command("claims")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="FIELD=COLUMN,...",
    help="read a field from a differently named column, e.g. policy_id=policy_number",
)
@click.option("--date-format", default=None, help="strptime format for dates (default: detected)")
@click.option(
    "--values",
    "value_pairs",
    multiple=True,
    metavar="FIELD:FROM=TO,...",
    help="read the file's values of part, damage_type, severity or fraud as tunegraph's, "
    "e.g. severity:Cat 3=severe,Cat 1=minor (tried before the built-in synonyms; repeatable)",
)
@click.option(
    "--values-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML value maps {field: {value in the file: tunegraph value}}; --values wins",
)
@click.option(
    "--strict",
    is_flag=True,
    help="reject a row whose part, damage type, severity or fraud flag is in no vocabulary "
    "(default: keep it as written and warn)",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def ingest_claims(
    file: Path,
    mapping: tuple[str, ...],
    date_format: str | None,
    value_pairs: tuple[str, ...],
    values_file: Path | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Load a claims CSV or JSONL into the claims database and the similar-claims index.

    Part, damage type, severity and fraud flag may be written in the file's own words: value
    maps (--values, --values-file) are tried first, then built-in synonyms ("High", "major"
    -> severe; "Bumper-Front" -> front_bumper; "Y"/"N" fraud flags). A value neither knows is
    kept as written and counted in the warnings, or rejects its row with --strict. Every
    problem of a rejected row is listed. Nothing is written unless the file can be read.
    """
    from tqdm import tqdm

    from ingest.claims import (
        ClaimsError,
        ValueMapError,
        parse_mapping,
        parse_value_maps,
        read_claims,
    )
    from rag.indexing import load_claims

    try:
        values = parse_value_maps(value_pairs, values_file)
    except ValueMapError as exc:  # a usage error: nothing read, nothing written
        raise click.UsageError(str(exc)) from None
    settings = load_settings()
    try:
        report = read_claims(
            file, parse_mapping(mapping), date_format, values=values, strict=strict
        )
    except ClaimsError as exc:
        raise click.ClickException(str(exc)) from None
    if report.claims:
        from rag.claims_db import DatabaseError

        with tqdm(
            total=len(report.claims), desc="claims embedded", unit="claim", disable=as_json
        ) as bar:
            try:
                load_claims(
                    report.claims,
                    composition.claims_database(settings),
                    lambda model: composition.vector_store(settings, composition.CLAIMS, model.dim),
                    lambda: composition.embedder(settings),
                    on_chunks=bar.update,
                )
            except DatabaseError as exc:
                raise click.ClickException(str(exc)) from None
    summary = report.summary()
    _emit(
        summary,
        as_json,
        [
            f"ingested {summary['ingested']} claims, rejected {len(report.rejected)} rows "
            f"(dates: {', '.join(f'{k} {v}' for k, v in report.date_formats.items())})",
            *_claim_rejections(summary["rejected"]),
            *_claim_values(summary),
            *(f"  note: {n}" for n in report.notes),
            *(
                [f"  ignored columns: {', '.join(report.ignored_columns)}"]
                if report.ignored_columns
                else []
            ),
        ],
    )
    if not report.claims:
        sys.exit(1)


def _claim_rejections(rejected: list[dict[str, Any]], limit: int = 20) -> list[str]:
    """One line per rejected row with all its problems; the first ``limit`` rows."""
    row = lambda r: f"  row {r['row']}: {'; '.join(r['problems'])}"  # noqa: E731
    return _rejections(rejected, limit, row, "more rejected rows")


def _claim_values(summary: dict[str, Any], limit: int = 8) -> list[str]:
    """How the file's words were read, and the values kept as written (the warnings)."""

    def listed(items: list[str]) -> str:
        more = f", +{len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    lines = [
        f"  read {name}: " + listed([f"{raw!r} as {value}" for raw, value in read.items()])
        for name, read in summary["translated"].items()
    ]
    for name, counts in summary["warnings"].items():
        lines.append(
            f"  warning: {name} in no vocabulary, kept as written: "
            + listed([f"{raw!r} x{count}" for raw, count in counts.items()])
            + f" (map with --values {name}:FROM=TO, or reject with --strict)"
        )
    return lines


@ingest.command("coco")
@click.argument("annotations", type=click.Path(path_type=Path))
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder of the image files [default: the annotation file's folder]",
)
@click.option("--name", default=None, help="dataset name [default: the annotation file's stem]")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def ingest_coco(annotations: Path, images: Path | None, name: str | None, as_json: bool) -> None:
    """Validate COCO damage annotations and register them as a dataset for fine-tuning."""
    from ingest.coco import CocoError, dataset_file, read_coco, write_dataset

    settings = load_settings()
    try:
        dataset = dataset_file(settings.home / "datasets", name or annotations.stem)
        report = read_coco(annotations, images)
    except CocoError as exc:
        raise click.ClickException(str(exc)) from None
    if report.examples:
        write_dataset(report.examples, dataset)
    summary = {**report.summary(), "dataset": str(dataset) if report.examples else None}
    _emit(
        summary,
        as_json,
        [
            f"validated {summary['ingested']} images with {summary['annotations']} damages; "
            f"rejected {len(report.problems)} item(s)",
            *_rejections(report.problems),
            *([f"dataset: {dataset}"] if report.examples else []),
        ],
    )
    if not report.examples:
        sys.exit(1)


def _kind_filter(kind: str | None) -> dict[str, str] | None:
    return {"kind": kind.upper()} if kind else None


@click.command()
@click.argument("query")
@click.option(
    "--kind",
    type=click.Choice(
        ["SPEC", "PROCEDURE", "EXPLANATION", "WIRING", "TROUBLESHOOTING"], case_sensitive=False
    ),
)
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option(
    "--mode", type=click.Choice(["hybrid", "dense", "bm25"]), default="hybrid", show_default=True
)
@namespace_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def search(query: str, kind: str | None, k: int, mode: str, namespace: str, as_json: bool) -> None:
    """Search the manual index."""
    retriever = manual_retriever(namespace)
    hits = retriever.search(query, k, _kind_filter(kind), mode)
    if as_json:
        click.echo(json.dumps([h.__dict__ for h in hits], indent=2))
        return
    for rank, hit in enumerate(hits, 1):
        first, _, rest = hit.text.partition("\n")
        click.echo(f"{rank}. [{hit.metadata.get('kind', '?')}] {hit.score:.3f}  {first}")
        if rest:
            click.echo("   " + rest.replace("\n", "\n   ")[:400])
