"""The Flask app factory: ``create_app()`` for gunicorn (``api.server.app:create_app()``) and tests.

Everything heavy hangs off ``app.extensions["tunegraph"]`` (:class:`api.server.services.Services`)
and is built on first use: importing this module and creating the app load no model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask

from api import composition
from api.jobs.manager import JobKind, JobManager
from api.jobs.store import JobStore
from api.server import errors, observability, protection
from api.server.multipart import APIRequest
from api.server.runtime import ContextFactory, ModelRuntime
from api.server.services import EXTENSION, Services
from api.settings import Settings


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    context_factory: ContextFactory | None = None,
    job_kinds: Mapping[str, JobKind] | None = None,
) -> Flask:
    """Build the API.

    ``config`` overrides Flask's config; ``settings`` default to the ``TUNEGRAPH_*``
    environment; ``context_factory`` builds the graphs' AgentContext on first use (default:
    :func:`api.composition.agent_context`, the real models); ``job_kinds`` replaces the
    registry of background jobs (default: :func:`api.jobs.kinds.default_kinds`: ingest,
    fine-tune and compare, each in a child process).
    """
    from api.jobs.kinds import default_kinds
    from api.server.blueprints import assessments, chat, files, health, jobs, ui

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.request_class = APIRequest  # multipart uploads: api/server/multipart.py
    app.config.update(MAX_CONTENT_LENGTH=settings.max_request_bytes)
    app.config.update(config or {})
    app.json.sort_keys = False

    logger = observability.configure_logging(settings.log_level)
    if not settings.database_url:
        settings.home.mkdir(parents=True, exist_ok=True)
    # With a task queue, workers run the jobs: nothing this process left behind to mark.
    store = JobStore(settings.effective_database_url, interrupt_leftovers=not settings.job_queue)
    if store.interrupted:
        logger.warning("jobs interrupted by a restart", extra={"count": store.interrupted})
    kinds = default_kinds(settings) if job_kinds is None else job_kinds
    if settings.job_queue:
        from api.jobs.queue import QueuedJobManager

        manager: JobManager = QueuedJobManager(store, kinds, settings)
    else:
        manager = JobManager(store, kinds, settings.job_workers)
    # A clean exit (gunicorn's SIGTERM included) stops running jobs and their child processes.
    # Not atexit: the interpreter joins the pool's worker threads (a running job) before atexit
    # handlers run, so it would hang until the job ended. Hooks registered here run first.
    threading._register_atexit(manager.shutdown)
    metrics = observability.Metrics(store.counts)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        runtime=ModelRuntime(settings, context_factory or composition.agent_context),
        jobs=manager,
        metrics=metrics,
        log=logger,
        # one thread for every assessment run the model queues admit: a run never waits in
        # the pool behind another model's runs
        pool=ThreadPoolExecutor(settings.threads_held_by_models, thread_name_prefix="assess"),
        started=int(time.time()),
    )

    # Order matters: the request id exists before auth can refuse a request.
    observability.init_app(app, metrics, logger)
    protection.init_app(app, settings)
    errors.init_app(app)
    for blueprint in (chat.bp, assessments.bp, jobs.bp, files.bp, health.bp, ui.bp, ui.root):
        app.register_blueprint(blueprint)
    return app
