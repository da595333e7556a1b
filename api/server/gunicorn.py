"""``tunegraph serve``: the app under gunicorn, in-process (no shell-out to the gunicorn CLI).

One worker process with a pool of threads. The models are loaded once per process (seconds to
minutes, hundreds of MB to GB each), and the job manager assumes it is the only process running
jobs: a second worker would load every model again and could run the same queue twice. Threads
share the loaded models; generation itself releases the GIL in torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

WORKERS = 1  # see the module docstring: models and the job manager are per process
TIMEOUT_MARGIN_S = 30  # a worker's timeout sits above the longest request it may serve
M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


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
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout_s,
        "graceful_timeout": timeout_s,  # let running requests finish on SIGTERM
        "keepalive": 5,
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
