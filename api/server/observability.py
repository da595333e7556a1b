"""Request ids, structured JSON logs and Prometheus metrics (one registry per app).

Every response carries ``X-Request-ID`` (the caller's, when it is a sane token, else a new one);
every request is logged as one JSON line with its route, status, latency and model.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request
from flask.wrappers import Response

LOGGER = "tunegraph.api"
REQUEST_ID = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> logging.Logger:
    """The API logger, writing JSON lines to stderr (configured once per process)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    return logger


class Metrics:
    """The app's Prometheus metrics; ``jobs_by_state`` is read from the job store at scrape."""

    def __init__(self, jobs_by_state: Callable[[], dict[str, int]]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tunegraph_http_requests",
            "HTTP requests by route, method, status and model",
            ["route", "method", "status", "model"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tunegraph_http_request_duration_seconds",
            "HTTP request latency by route and model",
            ["route", "method", "model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.tokens = Counter(
            "tunegraph_tokens",
            "tokens processed by chat completions, by model and kind (prompt or completion)",
            ["model", "kind"],
            registry=self.registry,
        )

        class _Jobs:
            def collect(self) -> Any:
                family = GaugeMetricFamily(
                    "tunegraph_jobs", "background jobs by state", labels=["state"]
                )
                for state, count in sorted(jobs_by_state().items()):
                    family.add_metric([state], count)
                yield family

        self.registry.register(_Jobs())

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def init_app(app: Flask, metrics: Metrics, logger: logging.Logger) -> None:
    @app.before_request
    def start() -> None:
        incoming = request.headers.get(REQUEST_ID, "")
        g.request_id = incoming if _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        # A streamed answer is counted when its headers go out; its tokens when it ends.
        response.headers[REQUEST_ID] = g.get("request_id", "")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        model = g.get("metric_model", "")
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.requests.labels(route, request.method, str(response.status_code), model).inc()
        metrics.latency.labels(route, request.method, model).observe(seconds)
        logger.info(
            "request",
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "ms": round(seconds * 1000, 1),
                "model": model or None,
            },
        )
        return response
