"""``tunegraph client chat|assess|jobs``: the bundled HTTP client on the command line.

Every command takes ``--url`` (default ``http://TUNEGRAPH_HOST:TUNEGRAPH_PORT``) and
``--api-key`` (default: the first of ``TUNEGRAPH_API_KEYS``). A refused request prints the
server's message and exits with code 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from api.cli.options import load_settings

if TYPE_CHECKING:
    from api.client import AssessmentResult, TunegraphClient

APPROACHES = ("finetuned", "agentic", "both")


def _connection(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --url, --api-key and --timeout; the command receives ``connect`` instead."""

    @click.option("--url", default=None, help="server URL [default: http://HOST:PORT of settings]")
    @click.option("--api-key", default=None, help="Bearer key [default: first of API_KEYS]")
    @click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds")
    @functools.wraps(command)
    def wrapper(url: str | None, api_key: str | None, timeout: float, **kwargs: Any) -> Any:
        return command(connect=functools.partial(_connect, url, api_key, timeout), **kwargs)

    return wrapper


@contextmanager
def _connect(url: str | None, api_key: str | None, timeout: float) -> Iterator[TunegraphClient]:
    """A client for the server; any :class:`APIError` becomes a one-line error, exit code 1."""
    from api.client import APIError, TunegraphClient

    if url is None or api_key is None:
        settings = load_settings()
        url = url or f"http://{settings.host}:{settings.port}"
        api_key = api_key if api_key is not None else next(iter(settings.api_keys), None)
    try:
        with TunegraphClient(url, api_key=api_key or None, timeout=timeout) as client:
            yield client
    except APIError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def client() -> None:
    """Call a running tunegraph server over HTTP (`tunegraph serve`)."""


# ---- chat ------------------------------------------------------------------------------------


@client.command()
@click.argument("question")
@click.option("--model", default="rag", show_default=True, help="base, rag, finetuned, ...")
@click.option("--system", default=None, help="a system message before the question")
@click.option("--max-tokens", type=click.IntRange(1), default=None)
@click.option("--temperature", type=click.FloatRange(0, 2), default=None)
@click.option("--stream", is_flag=True, help="print the answer as it is generated")
@_connection
def chat(
    connect: Callable[[], Any],
    question: str,
    model: str,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    stream: bool,
) -> None:
    """Ask one of the chat models a QUESTION and print its answer."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    params = {
        name: value
        for name, value in (("max_tokens", max_tokens), ("temperature", temperature))
        if value is not None  # temperature 0 is a choice, not a default
    }
    with connect() as api:
        if stream:
            for delta in api.chat_stream(messages, model=model, **params):
                click.echo(delta, nl=False)
            click.echo()
        else:
            click.echo(api.chat(messages, model=model, **params).text)


# ---- assess ----------------------------------------------------------------------------------


@client.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--approach", type=click.Choice(APPROACHES), default="both", show_default=True)
@click.option(
    "--claim",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file: policy_id, vin, incident_date, description, claimed_amount",
)
@click.option("--json", "as_json", is_flag=True, help="print the server's JSON answer")
@_connection
def assess(
    connect: Callable[[], Any],
    images: tuple[str, ...],
    approach: str,
    claim: str | None,
    as_json: bool,
) -> None:
    """Upload damage photos (IMAGES) and print the assessment: with --approach both, the two
    approaches side by side and where they agree."""
    claim_data = None
    if claim is not None:
        try:
            claim_data = json.loads(Path(claim).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read {claim}: {exc}", param_hint="--claim") from None
    with connect() as api:
        result = api.assess(list(images), approach=approach, claim=claim_data)
    if as_json:
        click.echo(json.dumps(result.raw, indent=2))
        return
    click.echo(assessment_table(result))


def assessment_table(result: AssessmentResult) -> str:
    """The approaches' answers as rows field | <approach>... | agree? (with both)."""
    names = list(result.assessments)
    agreement = result.agreement or {}
    rows: list[list[str]] = [["field", *names] + (["agree?"] if agreement else [])]

    def row(label: str, cell: Callable[[Any], str], agrees: Callable[[dict], bool | str]) -> None:
        cells = [cell(result.assessments[name]) for name in names]
        verdict = agrees(agreement) if agreement else None
        if isinstance(verdict, bool):
            verdict = "yes" if verdict else "no"
        rows.append([label, *cells] + ([verdict] if agreement else []))

    row(
        "damages",
        lambda a: ", ".join(f"{d.part} {d.type} ({d.severity})" for d in a.damages) or "none",
        lambda ag: ag["damages"]["jaccard"] == 1.0,
    )
    row(
        "overall severity", lambda a: a.overall_severity, lambda ag: ag["overall_severity"]["equal"]
    )
    row(
        "cost range",
        lambda a: (
            f"{a.cost_estimate.min:,.0f}-{a.cost_estimate.max:,.0f} {a.cost_estimate.currency}"
        ),
        lambda ag: "overlap" if ag["cost_estimate"]["overlap"] else "no overlap",
    )
    row(
        "repair actions",
        lambda a: ", ".join(f"{r.part} {r.action}" for r in a.repair_recommendations) or "none",
        lambda ag: ag["repair_actions"]["jaccard"] == 1.0,
    )
    row(
        "fraud level",
        lambda a: f"{a.fraud.level} (risk {a.fraud.risk:.2f})",
        lambda ag: ag["fraud_level"]["equal"],
    )
    rows.append(
        ["time (ms)", *(f"{result.timings_ms.get(name, 0):,.0f}" for name in names)]
        + ([""] if agreement else [])
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    if agreement:
        lines.append(
            f"\nagreement: {agreement['agreed']} of {agreement['checked']} checked fields agree"
        )
    for name, error in result.errors.items():
        lines.append(f"{name}: failed: {error.get('message')} ({error.get('code')})")
    lines.append(f"total: {result.timings_ms.get('total', 0):,.0f} ms")
    return "\n".join(lines)


# ---- files and jobs --------------------------------------------------------------------------


@client.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--folder", default="", help="folder in the server's upload area, e.g. manuals")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_connection
def upload(connect: Callable[[], Any], paths: tuple[Path, ...], folder: str, as_json: bool) -> None:
    """Send files (or a folder's files) for jobs to read, e.g. `upload manual/ --folder
    manuals`, then `jobs submit ingest-manuals --param 'paths=["manuals"]'`."""
    with connect() as api:
        try:
            stored = api.upload(paths, folder)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(stored, indent=2))
    else:
        click.echo("\n".join(f"{f['path']}  ({f['bytes']:,} bytes)" for f in stored))


@client.group()
def jobs() -> None:
    """List, follow, submit or cancel background jobs; download a compare job's report."""


def _job_line(job: dict[str, Any]) -> str:
    detail = job.get("error") or ""
    return f"{job['id']}  {job['kind']:<16} {job['state']:<11} {job['progress']:>4.0%}  {detail}"


def _finish(api: Any, job: dict[str, Any], wait: bool, as_json: bool) -> None:
    if wait:
        job = api.wait_job(job["id"])
    click.echo(json.dumps(job, indent=2) if as_json else _job_line(job))
    if wait and job["state"] != "succeeded":
        raise click.ClickException(f"job {job['id']} {job['state']}: {job.get('error') or ''}")


@jobs.command("list")
@click.option("--state", default=None, help="only jobs in this state")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_connection
def jobs_list(connect: Callable[[], Any], state: str | None, limit: int, as_json: bool) -> None:
    """The latest jobs, newest first."""
    with connect() as api:
        found = api.jobs(state=state, limit=limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        click.echo("\n".join(_job_line(job) for job in found) or "no jobs")


@jobs.command("show")
@click.argument("job_id")
@_connection
def jobs_show(connect: Callable[[], Any], job_id: str) -> None:
    """One job as JSON: state, progress, log tail, result."""
    with connect() as api:
        click.echo(json.dumps(api.job(job_id), indent=2))


def _param(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict:
    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE")
        try:
            params[key] = json.loads(raw)  # numbers, booleans, lists: paths=["a.pdf"]
        except ValueError:
            params[key] = raw
    return params


@jobs.command("submit")
@click.argument("kind")
@click.option("--param", "params", multiple=True, callback=_param, help="KEY=VALUE (JSON value)")
@click.option("--wait", is_flag=True, help="wait until the job has finished")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_connection
def jobs_submit(
    connect: Callable[[], Any], kind: str, params: dict, wait: bool, as_json: bool
) -> None:
    """Queue a job of KIND (e.g. ingest-claims --param file=claims.csv)."""
    with connect() as api:
        _finish(api, api.submit_job(kind, params), wait, as_json)


@jobs.command("cancel")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="wait until the job has stopped")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_connection
def jobs_cancel(connect: Callable[[], Any], job_id: str, wait: bool, as_json: bool) -> None:
    """Ask a queued or running job to stop."""
    with connect() as api:
        job = api.cancel_job(job_id)
        if wait:
            job = api.wait_job(job_id)
        click.echo(json.dumps(job, indent=2) if as_json else _job_line(job))


@jobs.command("report")
@click.argument("job_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md", "json"]),
    default="html",
    show_default=True,
    help="html (self-contained, plots inline), md or json",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="write the report to this file [default: standard output]",
)
@_connection
def jobs_report(connect: Callable[[], Any], job_id: str, fmt: str, out: Path | None) -> None:
    """Download the report of a finished compare job (`jobs submit compare ...`)."""
    with connect() as api:
        data = api.job_report(job_id, format=fmt)
    if out is None:
        click.echo(data, nl=False)  # bytes go to the binary stream as they are
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc}") from None
    click.echo(f"{out} ({len(data):,} bytes)")
