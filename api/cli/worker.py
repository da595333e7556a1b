"""``tunegraph worker``: run the jobs of the task queue (``TUNEGRAPH_JOB_QUEUE``)."""

from __future__ import annotations

import click

from api.cli.options import load_settings


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="jobs this worker runs at once (each in its own child process)",
)
def worker(concurrency: int) -> None:
    """Run queued jobs (ingest, fine-tune, compare) until stopped.

    Needs TUNEGRAPH_JOB_QUEUE (the broker: redis://... or amqp://...) and the same database
    (TUNEGRAPH_DATABASE_URL) and data root (TUNEGRAPH_HOME) as the API: the worker reads each
    job from the database, runs it, and writes its progress, log and result back there.
    """
    from api.jobs.queue import run_worker

    settings = load_settings()
    if not settings.job_queue:
        raise click.UsageError(
            "no job queue to take jobs from: set TUNEGRAPH_JOB_QUEUE (e.g. "
            "redis://127.0.0.1:6379/0), as for the API"
        )
    click.echo(
        f"tunegraph worker on queue {settings.job_queue_name!r} ({concurrency} at a time)", err=True
    )
    run_worker(settings, concurrency)
