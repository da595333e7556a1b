"""``tunegraph compare``: a thin command over :func:`agents.compare.run_compare`."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from api.cli.options import load_settings


class _Size(click.ParamType):
    """A whole number >= 0, or ``all``: the whole test split."""

    name = "N|all"

    def convert(self, value, param, ctx):
        from agents.compare.records import parse_size, size_problem

        try:
            size = parse_size(value)
        except ValueError:
            size = value
        if size_problem(param.name if param else "size", size):
            self.fail(f"use a whole number >= 0 or 'all', not {value!r}", param, ctx)
        return size


def _hourly_price(kind: str):
    return click.option(
        f"--{kind}-per-hour",
        type=click.FloatRange(0),
        default=None,
        help=f"USD per hour of the {kind.upper()} machine that runs the self-hosted models "
        f"(compute billing) [default: the --prices file's, else TUNEGRAPH_{kind.upper()}_PER_HOUR, "
        "else the price table's]",
    )


@click.command("compare")
@click.option(
    "--name",
    default="compare",
    show_default=True,
    help="report folder under TUNEGRAPH_HOME/runs",
)
@click.option(
    "--images",
    type=_Size(),
    default=24,
    show_default=True,
    help="held-out photos (a seeded sample of the demo's test split; all: every one; 0: skip "
    "the assessments)",
)
@click.option(
    "--questions",
    type=_Size(),
    default=40,
    show_default=True,
    help="held-out manual questions, the same number of each kind as far as each kind has "
    "them, asked in each of the 5 chat modes (all: the whole test split; 0: skip the chat)",
)
@click.option(
    "--claims",
    type=_Size(),
    default=40,
    show_default=True,
    help="test claims (the latest tenth of the demo's claims, hidden from the tools while the "
    "comparison runs; a sample keeps their fraud share) whose fraud risk each approach gives "
    "(all: every one; 0: skip fraud detection)",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="calls in flight at once, and the text engine's batch size for them (latency then "
    "includes the wait for a turn; 1: one client alone) [default: TUNEGRAPH_MAX_BATCH_SIZE]",
)
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML price table overriding the defaults (keys: cpu_per_hour, gpu_per_hour, "
    "text_input_per_1m, text_output_per_1m, training_per_1m_tokens, training_per_1k_images, "
    "currency)",
)
@_hourly_price("cpu")
@_hourly_price("gpu")
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 4096),
    default=None,
    help="cap every text-model answer (chat, assessment reports) [default: the model's]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="sampling and bootstrap seed")
@click.option("--json", "as_json", is_flag=True, help="print the scores and verdicts as JSON")
@click.pass_context
def compare(
    ctx: click.Context,
    name: str,
    images: int | str,
    questions: int | str,
    claims: int | str,
    concurrency: int | None,
    prices: Path | None,
    cpu_per_hour: float | None,
    gpu_per_hour: float | None,
    max_tokens: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Compare the fine-tuned and agentic assessments on held-out photos, their fraud risk on
    the test claims, and the five chat modes (base, rag, finetuned, finetuned-rag, agent) on
    held-out questions.

    Writes TUNEGRAPH_HOME/runs/NAME/report.md, a self-contained report.html, report.json and
    PNG plots: quality per approach, per-class deltas, damage-type and severity confusion
    matrices, fraud detection (ROC-AUC, precision and recall at each approach's levels), chat
    scores per kind of question, latency (mean/p50/p90/p95/p99/min/max/std, throughput), cost
    (inference per 1,000 requests and training: self-hosted models by their calls' share of
    the machine's time x its hourly price, a text model on TUNEGRAPH_LLM_BASE_URL by tokens)
    and a verdict per metric with bootstrap 95 % intervals ("no significant difference" when
    the interval includes 0).

    Slow on a CPU: each assessment and chat answer takes seconds on a 2-core machine, so the
    whole test split takes many minutes there (--images all --questions all). Approaches whose
    models are not trained yet fail on every item and say so in the report.
    """
    from tqdm import tqdm

    from agents.compare import CompareError, CompareOptions, ComparisonCancelled, run_compare
    from agents.compare.verdicts import verdict_text
    from api import composition

    settings = load_settings()
    # tests (and embedders) pass their own context factory: CliRunner.invoke(..., obj={...})
    factory = (ctx.obj or {}).get("context_factory", composition.agent_context)
    try:
        options = CompareOptions(
            name=name,
            images=_size(images),
            questions=_size(questions),
            claims=_size(claims),
            concurrency=concurrency or settings.max_batch_size,
            prices=prices,
            seed=seed,
            max_tokens=max_tokens,
            **composition.compute_billing(
                settings, cpu_per_hour, gpu_per_hour, prices_file=prices is not None
            ),
        )
        result = run_compare(
            options,
            demo_dir=settings.demo_dir,
            runs_dir=settings.runs_dir,
            models=composition.trained_models(settings),
            # the engine batches as many requests as the comparison sends at once
            context_factory=lambda: factory(settings.replace(max_batch_size=options.concurrency)),
            bar=functools.partial(tqdm, disable=as_json),
        )
    except (CompareError, ComparisonCancelled) as exc:
        raise click.ClickException(str(exc)) from None
    comparison = result.comparison
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2, default=str))
        return
    for task, verdicts in comparison.verdicts.items():
        if not verdicts or not verdicts[0].values:
            continue
        click.echo(f"{task}:")
        for v in verdicts:
            if v.best is None:
                click.echo(f"  {v.metric}: not comparable")
                continue
            click.echo(
                f"  {v.metric}: {verdict_text(v)} ({v.best} {_g(v.values[v.best])} vs "
                f"{v.runner_up} {_g(v.values[v.runner_up])}; margin {_g(v.margin)} "
                f"[{_g(v.ci_low)}, {_g(v.ci_high)}])"
            )
    for task, rows in comparison.costs.items():
        for name, c in rows.items():
            click.echo(
                f"cost of {name} ({task}): billed by {c['billing']}, "
                f"{_g(c['inference_per_1k'])} {c['currency']} per 1k requests, training "
                f"{_g(c['training'])} {c['currency']}"
            )
    click.echo(f"report: {result.files['report.md']} and {result.files['report.html']}")


def _size(value: int | str) -> int | str:
    """A size given to the command's function directly (``tunegraph demo`` passes its
    profile's ``images`` / ``questions`` as the YAML has them)."""
    from agents.compare.records import parse_size

    try:
        return parse_size(value)
    except (ValueError, AttributeError):
        return value  # CompareOptions says what is wrong with it


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
