"""``tunegraph serve``: the app under gunicorn, in-process (no shell-out to the gunicorn CLI).

One worker process with a pool of threads. The models are loaded once per process (seconds to
minutes, hundreds of MB to GB each), and the job manager assumes it is the only process running
jobs: a second worker would load every model again and could run the same queue twice. Threads
share the loaded models; generation itself releases the GIL in torch.

gunicorn reads request lines and headers up to twice the limits the app enforces
(:mod:`api.server.protection`), so the app answers an oversize URL or header with its JSON error
envelope; what gunicorn itself still refuses as too large gets that envelope from
:class:`JsonErrorWorker` instead of gunicorn's HTML page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

from api.server.errors import envelope
from api.server.protection import MAX_HEADER_FIELD_BYTES, MAX_HEADER_FIELDS, MAX_TARGET_BYTES

WORKERS = 1  # see the module docstring: models and the job manager are per process
TIMEOUT_MARGIN_S = 30  # a worker's timeout sits above the longest request it may serve
M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2
MAX_REQUEST_LINE = 8190  # the most gunicorn reads (method, URL and version)
# what gunicorn refuses while parsing, as (status, reason, code, message)
_TOO_LARGE = {
    LimitRequestLine: (
        414,
        "URI Too Long",
        "uri_too_long",
        f"the request line is longer than {MAX_REQUEST_LINE:,} bytes; at most "
        f"{MAX_TARGET_BYTES:,} bytes of URL are accepted (send long inputs in a POST body)",
    ),
    LimitRequestHeaders: (
        431,
        "Request Header Fields Too Large",
        "headers_too_large",
        f"the request headers are too large: at most {MAX_HEADER_FIELDS} fields of "
        f"{MAX_HEADER_FIELD_BYTES:,} bytes each are accepted",
    ),
}


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, answering a request its parser refuses as too large (see
    ``_TOO_LARGE``) with the API's JSON error envelope rather than an HTML page."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        refusal = next((v for kind, v in _TOO_LARGE.items() if isinstance(exc, kind)), None)
        if refusal is None:
            super().handle_error(req, client, addr, exc)
            return
        status, reason, code, message = refusal
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("-",))[0], exc)
        body = json.dumps(envelope(status, message, code=code)).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except OSError:
            self.log.debug("Failed to send error message.")


class _Gunicorn(BaseApplication):
    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Runs in the worker (preload_app is off): the app and its models live there.
        return self._factory()


def gunicorn_options(
    host: str, port: int, threads: int, timeout_s: int, log_level: str
) -> dict[str, Any]:
    """gunicorn's settings for one worker with ``threads`` threads.

    >>> gunicorn_options("127.0.0.1", 8000, 8, 150, "INFO")["bind"]
    '127.0.0.1:8000'
    """
    return {
        "bind": f"{host}:{port}",
        "workers": WORKERS,
        "worker_class": f"{__name__}.{JsonErrorWorker.__name__}",
        "threads": threads,
        "timeout": timeout_s,
        "graceful_timeout": timeout_s,  # let running requests finish on SIGTERM
        "keepalive": 5,
        "limit_request_line": MAX_REQUEST_LINE,
        "limit_request_fields": 2 * MAX_HEADER_FIELDS,
        "limit_request_field_size": 2 * MAX_HEADER_FIELD_BYTES,
        "preload_app": False,
        "loglevel": log_level.lower(),
        "errorlog": "-",
        "accesslog": None,  # the app logs every request as a JSON line itself
        "proc_name": "tunegraph",
    }


def serve(app_factory: Callable[[], Flask], **options: Any) -> None:
    """Run ``app_factory()``'s app under gunicorn until SIGTERM or SIGINT (see
    :func:`gunicorn_options` for ``options``)."""
    limit_malloc_arenas()  # before any thread exists; the forked worker inherits it
    _Gunicorn(app_factory, gunicorn_options(**options)).run()


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``); False where that is not possible.

    glibc gives threads their own arenas (up to 8 per core) and seldom returns their memory, so
    a threaded server's RSS grows with the threads it has run, not with what it holds: in
    ``benchmarks/api_load.py`` 90 s of load grew the server by 13.6 % with the default and by
    1.0 % with 2 arenas.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl, macOS): nothing to cap
