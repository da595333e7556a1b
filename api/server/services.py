"""What the blueprints share, hung off ``app.extensions`` by :func:`api.server.app.create_app`.

A module of its own so that blueprints reach the services without importing ``api.server.app``
(which imports the blueprints).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flask import current_app

from api.jobs.manager import JobManager
from api.server import observability
from api.server.runtime import ModelRuntime
from api.settings import Settings

EXTENSION = "tunegraph"


@dataclass
class Services:
    """What the blueprints share: settings, the lazily loaded models, jobs and metrics."""

    settings: Settings
    runtime: ModelRuntime
    jobs: JobManager
    metrics: observability.Metrics
    log: logging.Logger
    pool: ThreadPoolExecutor  # runs the two assessment approaches side by side
    started: int  # epoch seconds; the ``created`` of /v1/models


def services() -> Services:
    """The current app's :class:`Services`."""
    return current_app.extensions[EXTENSION]
