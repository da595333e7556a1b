"""``tunegraph serve``: the Flask API under gunicorn."""

from __future__ import annotations

import click

from api.cli.options import load_settings


@click.command()
@click.option("--host", default=None, help="address to bind [default: TUNEGRAPH_HOST]")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="[default: TUNEGRAPH_PORT]"
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=16,
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
    if threads <= settings.threads_held_by_models:
        raise click.UsageError(
            f"--threads {threads} leaves no thread for /healthz and the other routes while both "
            f"models are busy ({settings.threads_held_by_models} threads: "
            f"TUNEGRAPH_MAX_BATCH_SIZE={settings.max_batch_size} running on the text model, 1 on "
            f"the vision model, TUNEGRAPH_MAX_WAITING_REQUESTS={settings.max_waiting_requests} "
            "waiting for each); use "
            f"--threads {settings.threads_held_by_models + 2} or more, or let fewer requests wait"
        )
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
