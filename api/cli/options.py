"""Pieces shared by the CLI's command modules."""

from __future__ import annotations

from pathlib import Path

import click

from api.settings import Settings, SettingsError


def load_settings() -> Settings:
    """Settings from the environment; a bad variable is a usage error naming it, not a traceback."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def find_config_file(
    _ctx: click.Context, _param: click.Parameter, value: Path | None
) -> Path | None:
    """A ``--config``-like option's YAML: the file (relative to the current directory first),
    else the config of that name shipped with tunegraph (``configs/text/smollm2_quick.yaml``
    works outside the checkout too); a bad one is a usage error listing the shipped ones."""
    from finetune.config import ConfigError, find_config

    if value is None:
        return None
    try:
        return find_config(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_namespace(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from rag.indexing import NAMESPACE

    if not NAMESPACE.fullmatch(value):
        raise click.BadParameter("use 1-64 letters, digits, '_' or '-'")
    return value


namespace_option = click.option(
    "--namespace",
    default="manuals",
    show_default=True,
    callback=_check_namespace,
    help="index namespace (separate collections, e.g. manual_scans)",
)


def manual_retriever(namespace: str):
    """The manual retriever over a namespace, or a clear error when nothing was ingested."""
    from api import composition

    settings = load_settings()
    retriever = composition.retriever(settings, namespace, composition.embedder(settings))
    if retriever.store.count() == 0:
        raise click.ClickException(
            f"the {namespace!r} index is empty: run `tunegraph ingest manuals PATH` first."
        )
    return retriever
