"""API keys and per-key rate limiting for ``/v1/*``.

With ``TUNEGRAPH_API_KEYS`` set, every ``/v1/*`` request needs ``Authorization: Bearer <key>``.
Each key (or client address, without keys) has a token bucket: ``rate_limit_burst`` requests at
once, refilled at ``rate_limit_per_minute``; an empty bucket answers 429 with ``Retry-After``.
The buckets live in the process: with several workers each enforces its own share.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask, request

from api.server.errors import APIError
from api.settings import Settings

PROTECTED_PREFIX = "/v1/"
_MAX_BUCKETS = 10_000  # idle full buckets are dropped beyond this many clients


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by client; ``take`` answers 0 (allowed) or the seconds to wait."""

    def __init__(self, per_minute: int, burst: int, clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.burst:
                del self._buckets[key]


def _bearer_key(settings: Settings) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(
            401,
            "missing API key: send the header `Authorization: Bearer <key>`",
            code="missing_api_key",
        )
    key = key.strip()
    # compare_digest against every key: the time taken says nothing about which one is close
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
        raise APIError(401, "invalid API key", code="invalid_api_key")
    return key


def init_app(app: Flask, settings: Settings) -> None:
    limiter = (
        RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        if settings.rate_limit_per_minute
        else None
    )

    @app.before_request
    def guard() -> None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return
        key = _bearer_key(settings) if settings.api_keys else f"addr:{request.remote_addr}"
        if limiter is not None and (wait := limiter.take(key)):
            raise APIError(
                429,
                f"rate limit of {settings.rate_limit_per_minute} requests per minute reached; "
                f"retry in {math.ceil(wait)} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(math.ceil(wait))},
            )
