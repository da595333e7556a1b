"""``tunegraph compare``: a thin command over :func:`agents.compare.run_compare`."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from api.cli.options import load_settings


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
    type=click.IntRange(0),
    default=24,
    show_default=True,
    help="held-out photos (a seeded sample of the demo's test split; 0: skip the assessments)",
)
@click.option(
    "--questions",
    type=click.IntRange(0),
    default=40,
    show_default=True,
    help="held-out manual questions, asked in each of the 5 chat modes (0: skip the chat)",
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
    images: int,
    questions: int,
    prices: Path | None,
    cpu_per_hour: float | None,
    gpu_per_hour: float | None,
    max_tokens: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Compare the fine-tuned and agentic assessments on held-out photos and the five chat
    modes (base, rag, finetuned, finetuned-rag, agent) on held-out questions.

    Writes TUNEGRAPH_HOME/runs/NAME/report.md, a self-contained report.html, report.json and
    PNG plots: quality per approach, per-class deltas, confusion matrices, latency
    (mean/p50/p90/p95/p99/min/max/std, sequential throughput), cost (inference per 1,000
    requests and training: self-hosted models by their calls' wall time x the machine's hourly
    price, a text model on TUNEGRAPH_LLM_BASE_URL by tokens) and a verdict per metric with
    bootstrap 95 % intervals.

    Slow on a CPU: every call runs one at a time (latency is measured call by call), each
    assessment and chat answer takes seconds on a 2-core machine, so the defaults take a long
    time there. Start with --images 4 --questions 8. Approaches whose models are not
    trained yet fail on every item and say so in the report.
    """
    from tqdm import tqdm

    from agents.compare import CompareError, CompareOptions, ComparisonCancelled, run_compare
    from api import composition

    settings = load_settings()
    # tests (and embedders) pass their own context factory: CliRunner.invoke(..., obj={...})
    factory = (ctx.obj or {}).get("context_factory", composition.agent_context)
    try:
        options = CompareOptions(
            name=name,
            images=images,
            questions=questions,
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
            context_factory=lambda: factory(settings),
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
            outcome = "tie" if v.tie else f"{v.best} wins"
            click.echo(
                f"  {v.metric}: {outcome} ({v.best} {_g(v.values[v.best])} vs {v.runner_up} "
                f"{_g(v.values[v.runner_up])}; margin {_g(v.margin)} [{_g(v.ci_low)}, "
                f"{_g(v.ci_high)}])"
            )
    for task, rows in comparison.costs.items():
        for name, c in rows.items():
            click.echo(
                f"cost of {name} ({task}): billed by {c['billing']}, "
                f"{_g(c['inference_per_1k'])} {c['currency']} per 1k requests, training "
                f"{_g(c['training'])} {c['currency']}"
            )
    click.echo(f"report: {result.files['report.md']} and {result.files['report.html']}")


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
