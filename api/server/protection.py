"""API keys and per-key rate limiting for ``/v1/*``.

With ``TUNEGRAPH_API_KEYS`` set, every ``/v1/*`` request needs ``Authorization: Bearer <key>``.
Each key (or client address, without keys) may send ``rate_limit_burst`` requests in any window
of ``rate_limit_burst / rate_limit_per_minute`` minutes (so a burst at once, and the per-minute
rate on average); beyond that it is answered 429 with ``Retry-After``. The ``limits`` library
counts (a moving window): in this process by default, or in Redis with ``rate_limit_storage``
(``redis://...``), where every worker and every API process shares one count per key. When that
storage does not answer, requests are let through and the failure is logged (a limiter must not
take the API down with it).

A client address that fails ``auth_failures_per_minute`` key checks within a minute is answered
429 (``too_many_auth_failures``) without its key being checked, until its window has room again: a key
cannot be guessed at the speed of the network. ``/metrics`` needs a key too with
``metrics_require_key``.

Every request's URL, headers and declared body size are checked first (414, 431, 413, in the
JSON envelope), on every path: the limits are gunicorn's defaults, and ``api/server/gunicorn.py``
lets gunicorn read a little more so that the app, not gunicorn's HTML page, answers.

Each request's caller is ``flask.g.caller`` (:class:`Caller`): the id of its key (a hash, never
the key) and whether it is an admin key. Jobs and uploads belong to that id. Without keys every
caller is the same local user, who sees everything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request

from api.jobs.store import LOCAL  # the caller id when the server has no keys
from api.server.errors import APIError
from api.server.observability import LOGGER
from api.settings import Settings

log = logging.getLogger(LOGGER)
PROTECTED_PREFIX = "/v1/"
METRICS_PATH = "/metrics"
MAX_TARGET_BYTES = 4094  # the URL's path and query string
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190  # one `Name: value` line


class RateLimiter:
    """At most ``burst`` hits per key in any window of ``burst / per_minute`` minutes, counted
    in ``storage`` (a ``limits`` storage URI) under ``namespace``; ``take`` and ``wait`` answer
    0 (allowed) or the seconds until the key has room."""

    def __init__(
        self, per_minute: int, burst: int, storage: str = "memory://", namespace: str = "requests"
    ) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.item = RateLimitItemPerSecond(burst, max(1, round(burst * 60 / per_minute)))
        self.namespace = f"tunegraph-{namespace}"
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage))
        self._warned = False

    def take(self, key: str) -> float:
        """Count a hit for ``key`` if it has room; the seconds to wait if not."""
        try:
            if self._limiter.hit(self.item, self.namespace, key):
                return 0.0
            return self._retry_after(key)
        except Exception:
            return self._unavailable()

    def wait(self, key: str) -> float:
        """The seconds until ``key`` has room (0: it has room now), counting nothing."""
        try:
            if self._limiter.test(self.item, self.namespace, key):
                return 0.0
            return self._retry_after(key)
        except Exception:
            return self._unavailable()

    def _retry_after(self, key: str) -> float:
        stats = self._limiter.get_window_stats(self.item, self.namespace, key)
        return max(stats.reset_time - time.time(), 0.001)

    def _unavailable(self) -> float:
        if not self._warned:  # once per limiter: a storage outage must not flood the log
            self._warned = True
            log.exception("the rate-limit storage does not answer; requests are not limited")
        return 0.0


@dataclass(frozen=True)
class Caller:
    """Who sent a request: ``id`` names its key (the first 16 hex digits of its SHA-256), and
    ``admin`` callers may see and cancel every caller's jobs."""

    id: str
    admin: bool = False


def key_id(key: str) -> str:
    """A stable id for an API key that does not reveal it.

    >>> key_id("k-one")
    '51ad7fe8c6d4fbef'
    """
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def caller() -> Caller:
    """The current request's caller (the local user outside a guarded request)."""
    return g.get("caller") or Caller(LOCAL, admin=True)


def check_size() -> None:
    """Refuse a request whose URL (414), headers (431) or declared body (413) is too large."""
    target = request.environ.get("RAW_URI") or request.full_path
    if len(target) > MAX_TARGET_BYTES:
        raise APIError(
            414,
            f"the URL is {len(target):,} bytes long; at most {MAX_TARGET_BYTES:,} are accepted "
            "(send long inputs in a POST body)",
            code="uri_too_long",
        )
    fields = list(request.headers.items())
    too_long = next(
        (name for name, value in fields if len(name) + 2 + len(value) > MAX_HEADER_FIELD_BYTES),
        None,
    )
    if len(fields) > MAX_HEADER_FIELDS or too_long:
        raise APIError(
            431,
            f"the request headers are too large: at most {MAX_HEADER_FIELDS} fields of "
            f"{MAX_HEADER_FIELD_BYTES:,} bytes each are accepted",
            param=too_long,
            code="headers_too_large",
        )
    limit, size = request.max_content_length, request.content_length
    if limit is None:
        return
    if size is None and request.environ.get("wsgi.input_terminated"):
        # a chunked body: Werkzeug would cut it at the limit without a word
        request.environ["wsgi.input"] = _CappedBody(request.environ["wsgi.input"], limit)
    elif size is not None and size > limit:
        raise _too_large(f"the body is {size:,} bytes", limit)


def _too_large(what: str, limit: int) -> APIError:
    return APIError(
        413,
        f"{what}; at most {limit:,} are accepted (TUNEGRAPH_MAX_REQUEST_BYTES)",
        code="request_too_large",
    )


class _CappedBody:
    """A request body of unknown length that answers 413 once it holds more than ``limit``
    bytes: at the limit it reads one byte ahead to tell the end of the body from more."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream, self._limit, self._read = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._read += len(data)
        if self._read > self._limit or (self._read == self._limit and self._stream.read(1)):
            raise _too_large(f"the body is over {self._limit:,} bytes", self._limit)
        return data


def _bearer_key(settings: Settings) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(
            401,
            "missing API key: send the header `Authorization: Bearer <key>`",
            code="missing_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="tunegraph"'},
        )
    key = key.strip()
    # compare_digest against every key: the time taken says nothing about which one is close
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.all_keys):
        raise APIError(
            401,
            "invalid API key",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="tunegraph", error="invalid_token"'},
        )
    return key


def _authenticate(settings: Settings, failures: RateLimiter | None) -> str:
    """The request's valid key; 401 without one, and 429 (its key unchecked) for a client
    address that failed too often lately."""
    address = request.remote_addr or "-"
    if failures is not None and (wait := failures.wait(address)):
        seconds = math.ceil(wait)
        raise APIError(
            429,
            f"more than {settings.auth_failures_per_minute} failed API-key checks per minute "
            f"from this address; retry in {seconds} s",
            code="too_many_auth_failures",
            headers={"Retry-After": str(seconds)},
        )
    try:
        return _bearer_key(settings)
    except APIError:
        if failures is not None:
            failures.take(address)
        raise


def init_app(app: Flask, settings: Settings) -> None:
    limiter = (
        RateLimiter(
            settings.rate_limit_per_minute,
            settings.rate_limit_burst,
            settings.rate_limit_storage or "memory://",
        )
        if settings.rate_limit_per_minute
        else None
    )
    per_minute = settings.auth_failures_per_minute
    failures = (
        RateLimiter(
            per_minute,
            per_minute,
            settings.rate_limit_storage or "memory://",
            namespace="auth-failures",
        )
        if per_minute
        else None
    )
    app.before_request(check_size)

    @app.before_request
    def guard() -> None:
        if request.path == METRICS_PATH:
            if settings.metrics_require_key and settings.all_keys:
                _authenticate(settings, failures)  # a scrape is never rate limited
            return
        if not request.path.startswith(PROTECTED_PREFIX):
            return
        if settings.all_keys:
            key = _authenticate(settings, failures)
            g.caller = Caller(key_id(key), admin=key in settings.admin_keys)
            counted = f"key:{g.caller.id}"  # a shared limit storage never sees the key itself
        else:
            counted = f"addr:{request.remote_addr}"
            g.caller = Caller(LOCAL, admin=True)
        if limiter is not None and (wait := limiter.take(counted)):
            raise APIError(
                429,
                f"rate limit of {settings.rate_limit_per_minute} requests per minute reached; "
                f"retry in {math.ceil(wait)} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(math.ceil(wait))},
            )
