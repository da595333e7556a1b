"""The ``tunegraph`` command line.

Heavy libraries (torch, transformers, PIL) are imported inside the commands that need them, so
``tunegraph --help`` stays instant.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from api.cli.client import client
from api.cli.compare import compare
from api.cli.demo import demo
from api.cli.eval import eval_
from api.cli.finetune import finetune
from api.cli.ingest import ingest, search
from api.cli.models import models
from api.cli.options import load_settings
from api.cli.serve import serve
from api.cli.worker import worker


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


# ---- the verb groups, one module each ------------------------------------------------------

main.add_command(demo)
main.add_command(models)


main.add_command(ingest)
main.add_command(search)


main.add_command(eval_)


main.add_command(finetune)


main.add_command(serve)
main.add_command(worker)
main.add_command(client)


main.add_command(compare)


if __name__ == "__main__":
    main()
