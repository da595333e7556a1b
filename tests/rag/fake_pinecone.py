"""An in-process fake of the Pinecone REST API, for running the real ``pinecone`` SDK offline.

Written against ``pinecone`` 10.2.0, which speaks REST with httpx (API version header
``X-Pinecone-Api-Version: 2026-07``). The control plane is one ``ThreadingHTTPServer`` on
``127.0.0.1``; every index gets its own data-plane server on its own port, as a real index
has its own host. ``describe_index(name).host`` returns that server as ``http://127.0.0.1:PORT``
(with the scheme: a bare host would be read as https by the SDK).

Control plane: ``POST /indexes``, ``GET /indexes``, ``GET|PATCH|DELETE /indexes/{name}``.
Data plane: ``POST /vectors/upsert``, ``POST /query``, ``GET /vectors/fetch``,
``POST /vectors/delete``, ``POST /vectors/update``, ``GET /vectors/list``,
``POST /describe_index_stats``.

State is in memory. Vector values are rounded to float32 and metadata numbers come back as
floats, as Pinecone stores them. Failures can be injected per endpoint with
:meth:`FakePinecone.fail_next`, and :attr:`FakePinecone.calls` counts every HTTP request per
endpoint, including the SDK's own retries.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ENDPOINTS = (
    "create_index",
    "list_indexes",
    "describe_index",
    "configure_index",
    "delete_index",
    "upsert",
    "query",
    "fetch",
    "delete",
    "update",
    "list",
    "describe_index_stats",
)
DEFAULT_NAMESPACE = "__default__"
DENSE_FIELD = "_values"
SPARSE_FIELD = "_sparse_values"
METRICS = ("cosine", "euclidean", "dotproduct")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,43}[a-z0-9])?$")
_MISSING = object()


class ApiFailure(Exception):
    """An error answer: HTTP status, machine code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str) -> ApiFailure:
    return ApiFailure(400, "INVALID_ARGUMENT", message)


# gRPC status numbers, which the data plane puts in its error bodies.
_GRPC_CODES = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}
_STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# ---------------------------------------------------------------------------- metadata filters


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bool)) or _is_number(value)


def _scalar_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return isinstance(a, str) and isinstance(b, str) and a == b


def _any_eq(stored: Any, operand: Any) -> bool:
    """Equality where a stored list of strings matches when any element does."""
    if isinstance(stored, list):
        return any(_scalar_eq(item, operand) for item in stored)
    return _scalar_eq(stored, operand)


_COMPARE = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _field_op(op: str, operand: Any):
    """One operator on one field, validated now, applied later to the stored value."""
    if op in ("$eq", "$ne"):
        if not _is_scalar(operand):
            raise _bad(f"{op} operator requires a string, number or boolean operand")
        if op == "$eq":
            return lambda v: v is not _MISSING and _any_eq(v, operand)
        return lambda v: v is _MISSING or not _any_eq(v, operand)
    if op in _COMPARE:
        if not _is_number(operand):
            raise _bad(f"{op} operator requires a number operand")
        compare = _COMPARE[op]
        return lambda v: _is_number(v) and compare(float(v), float(operand))
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not all(_is_scalar(x) for x in operand):
            raise _bad(f"{op} operator requires an array of strings, numbers or booleans")
        if op == "$in":
            return lambda v: v is not _MISSING and any(_any_eq(v, x) for x in operand)
        return lambda v: v is _MISSING or not any(_any_eq(v, x) for x in operand)
    if op == "$exists":
        if not isinstance(operand, bool):
            raise _bad("$exists operator requires a boolean operand")
        return lambda v: (v is not _MISSING) == operand
    raise _bad(f"Unknown filter operator {op!r}")


def compile_filter(expression: Any):
    """Validate a Pinecone metadata filter and return a predicate over a metadata dict.

    Top-level fields are ANDed; a bare value means ``$eq``; ``$and``/``$or`` take lists of
    filters. Raises :class:`ApiFailure` (400) for a malformed filter.
    """
    if not isinstance(expression, dict):
        raise _bad("Filter must be a JSON object")
    clauses = []
    for key, condition in expression.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise _bad(f"{key} operator requires a non-empty array of filters")
            parts = [compile_filter(item) for item in condition]
            combine = all if key == "$and" else any
            clauses.append(lambda md, parts=parts, combine=combine: combine(p(md) for p in parts))
        elif key.startswith("$"):
            raise _bad(f"Unknown top-level filter operator {key!r}")
        else:
            if isinstance(condition, dict):
                if not condition:
                    raise _bad(f"Filter for field {key!r} has no operator")
                ops = [_field_op(op, operand) for op, operand in condition.items()]
            else:
                ops = [_field_op("$eq", condition)]
            clauses.append(
                lambda md, key=key, ops=ops: all(op(md.get(key, _MISSING)) for op in ops)
            )
    return lambda metadata: all(clause(metadata or {}) for clause in clauses)


# ---------------------------------------------------------------------------- vectors and scoring


def _float32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


def _round_score(score: float) -> float:
    return array("f", [score])[0] if math.isfinite(score) else score


def _parse_values(raw: Any, what: str) -> list[float]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(_is_number(x) for x in raw):
        raise _bad(f"{what} must be an array of numbers")
    if not all(math.isfinite(x) for x in raw):
        raise _bad(f"{what} contains a NaN or infinite value")
    return _float32(raw)


def _parse_sparse(raw: Any, what: str) -> dict[str, list] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad(f"{what} must be an object with indices and values")
    indices, values = raw.get("indices"), raw.get("values")
    if not isinstance(indices, list) or not isinstance(values, list):
        raise _bad(f"{what} requires indices and values arrays")
    if len(indices) != len(values):
        raise _bad(f"{what} indices and values must have the same length")
    if not indices:
        raise _bad(f"{what} must contain at least one non-zero value")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**32 for i in indices):
        raise _bad(f"{what} indices must be unsigned 32-bit integers")
    if len(set(indices)) != len(indices):
        raise _bad(f"{what} contains duplicate indices")
    return {"indices": list(indices), "values": _parse_values(values, f"{what} values")}


def _sparse_dot(a: dict[str, list] | None, b: dict[str, list] | None) -> float:
    if not a or not b:
        return 0.0
    weights = dict(zip(a["indices"], a["values"], strict=True))
    return sum(weights.get(i, 0.0) * v for i, v in zip(b["indices"], b["values"], strict=True))


def _dense_score(metric: str, query: list[float], stored: list[float]) -> float:
    if metric == "euclidean":
        return sum((q - s) ** 2 for q, s in zip(query, stored, strict=True))
    dot = sum(q * s for q, s in zip(query, stored, strict=True))
    if metric == "dotproduct":
        return dot
    norm = math.sqrt(sum(q * q for q in query)) * math.sqrt(sum(s * s for s in stored))
    return dot / norm if norm else 0.0


def _clean_metadata(raw: Any) -> dict[str, Any] | None:
    """Pinecone's write rules: strings, numbers (kept as floats), booleans, lists of strings."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad("Metadata must be a JSON object")
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue  # the server strips nulls rather than refusing them
        if isinstance(value, (bool, str)):
            cleaned[key] = value
        elif _is_number(value):
            cleaned[key] = float(value)
        elif isinstance(value, list) and all(isinstance(x, str) for x in value):
            cleaned[key] = list(value)
        else:
            raise _bad(
                "Metadata value must be a string, number, boolean or list of strings, "
                f"got {json.dumps(value)[:16]!r} for field {key!r}"
            )
    if len(json.dumps(cleaned).encode()) > 40 * 1024:
        raise _bad("Metadata size exceeds the limit of 40960 bytes per vector")
    return cleaned


@dataclass
class _Record:
    id: str
    values: list[float]
    sparse: dict[str, list] | None
    metadata: dict[str, Any] | None

    def to_json(self, *, values: bool = True, metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "values": self.values if values else []}
        if values and self.sparse is not None:
            out["sparseValues"] = self.sparse
        if metadata and self.metadata is not None:
            out["metadata"] = self.metadata
        return out


@dataclass
class _Index:
    name: str
    schema: dict[str, Any]
    deployment: dict[str, Any]
    deletion_protection: str
    tags: dict[str, str] | None
    read_capacity: dict[str, Any]
    dimension: int | None
    metric: str
    vector_type: str  # "dense" or "sparse"
    sparse_field: bool  # schema declares _sparse_values
    document_index: bool  # schema uses field names of its own: the Documents API, not vectors
    host: str = ""
    deleted: bool = False
    namespaces: dict[str, dict[str, _Record]] = field(default_factory=dict)

    def model(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "status": {"ready": True, "state": "Ready"},
            "schema": self.schema,
            "deployment": self.deployment,
            "read_capacity": self.read_capacity,
            "deletion_protection": self.deletion_protection,
            "tags": self.tags,
        }


# ---------------------------------------------------------------------------- failure injection


@dataclass
class _Failure:
    endpoint: str
    remaining: int | None
    status: int
    retry_after: float | None
    message: str | None
    index: str | None
    drop_connection: bool
    delay_s: float

    def matches(self, endpoint: str, index: str | None) -> bool:
        if self.endpoint not in ("*", endpoint):
            return False
        return self.index is None or self.index == index


@dataclass
class RecordedRequest:
    """One HTTP request the fake received, with what it answered."""

    endpoint: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    index: str | None
    status: int | None = None  # None when the connection was dropped
    injected: bool = False


# ---------------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "FakePinecone/1.0"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        fake: FakePinecone = self.server.fake  # type: ignore[attr-defined]
        index: _Index | None = self.server.index  # type: ignore[attr-defined]
        raw = self._read_body()
        split = urlsplit(self.path)
        status, payload, headers, drop = fake._handle(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            raw_body=raw,
            index=index,
        )
        if drop:
            self.close_connection = True
            return
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(fake: FakePinecone, bind: str, index: _Index | None) -> tuple[_Server, str]:
    server = _Server((bind, 0), _Handler)
    server.fake = fake  # type: ignore[attr-defined]
    server.index = index  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"fake-pinecone-{index.name if index else 'control'}",
        daemon=True,
    )
    thread.start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


# ---------------------------------------------------------------------------- the fake


def reset_sdk_throttle_state() -> None:
    """Forget the SDK's process-wide retry budget and bulk-upsert throttle gates.

    ``pinecone`` 10.x keeps both per bare hostname (``127.0.0.1`` for every fake, whatever
    the port) for the life of the process: every retryable answer spends a retry token, and
    below half the budget (about 50 failures) the SDK stops retrying at all. Call this
    between tests that inject failures so one test's 503s cannot change another's retries.
    """
    try:
        from pinecone._internal.bulk import get_registry
        from pinecone._internal.http_client import get_budget_registry
    except ImportError:  # another SDK layout: nothing of this kind to reset
        return
    get_budget_registry()._reset()
    get_registry()._reset()


class FakePinecone:
    """A local stand-in for Pinecone's control plane and index hosts.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Point the SDK at it with
    ``Pinecone(api_key=fake.api_key, host=fake.host)``; ``pc.Index(name)`` then resolves the
    index's own host through ``describe_index``.

    Args:
        api_key: The key requests must carry in ``Api-Key`` (401 otherwise).
        max_batch: Most vectors one upsert request may carry (400 above it), as Pinecone's 1000.
        max_request_bytes: Largest request body accepted (413 above it), as Pinecone's 2 MB.
        hybrid_requires_sparse_field: When true, sparse values are accepted only by an index
            whose schema declares ``_sparse_values``. When false (default), a dense
            ``dotproduct`` index accepts them too, as legacy Pinecone indexes do.
        strict_namespace_delete: When true (default), deleting from a namespace that holds no
            vectors answers 404, as serverless Pinecone does.
    """

    def __init__(
        self,
        *,
        api_key: str = "fake-pinecone-key",
        bind: str = "127.0.0.1",
        max_batch: int = 1000,
        max_request_bytes: int = 2 * 1024 * 1024,
        hybrid_requires_sparse_field: bool = False,
        strict_namespace_delete: bool = True,
    ) -> None:
        self.api_key = api_key
        self.bind = bind
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.hybrid_requires_sparse_field = hybrid_requires_sparse_field
        self.strict_namespace_delete = strict_namespace_delete
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._indexes: dict[str, _Index] = {}
        self._failures: list[_Failure] = []
        self._servers: list[_Server] = []
        self._request_ids = itertools.count(1)
        self._auto_names = itertools.count(1)
        self._host = ""

    # -- lifecycle

    def start(self) -> FakePinecone:
        if not self._host:
            server, self._host = _serve(self, self.bind, None)
            self._servers.append(server)
        return self

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        # shutdown() waits out a poll interval per server: run them side by side.
        stoppers = [threading.Thread(target=server.shutdown) for server in servers]
        for stopper in stoppers:
            stopper.start()
        for stopper, server in zip(stoppers, servers, strict=True):
            stopper.join()
            server.server_close()
        self._host = ""

    def __enter__(self) -> FakePinecone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """The control-plane URL, ``http://127.0.0.1:PORT``."""
        if not self._host:
            raise RuntimeError("FakePinecone is not started")
        return self._host

    def client(self, **kwargs: Any) -> Any:
        """A real ``pinecone.Pinecone`` pointed at this fake (close it, or use ``with``)."""
        from pinecone import Pinecone

        return Pinecone(api_key=self.api_key, host=self.host, **kwargs)

    def index_host(self, name: str) -> str:
        """The data-plane URL of index *name*."""
        with self._lock:
            return self._live_index(name).host

    # -- test controls

    def fail_next(
        self,
        endpoint: str,
        times: int | None = 1,
        *,
        status: int = 503,
        retry_after: float | None = 0.0,
        message: str | None = None,
        index: str | None = None,
        drop_connection: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        """Make the next *times* requests to *endpoint* fail (``None``: until cleared).

        *endpoint* is one of :data:`ENDPOINTS` or ``"*"``. The answer is *status* with a
        Pinecone-shaped error body and, unless *retry_after* is ``None``, a ``Retry-After``
        header (``0`` keeps the SDK's own retries instant). ``drop_connection`` closes the
        socket without answering. ``delay_s`` sleeps first, to provoke client timeouts.
        """
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None")
        with self._lock:
            self._failures.append(
                _Failure(
                    endpoint,
                    times,
                    status,
                    retry_after,
                    message,
                    index,
                    drop_connection,
                    delay_s,
                )
            )

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.injected.clear()
            self.requests.clear()

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def index_names(self) -> list[str]:
        with self._lock:
            return sorted(self._indexes)

    def vectors(self, index: str, namespace: str = "") -> dict[str, dict[str, Any]]:
        """A copy of what *namespace* of *index* holds, id -> ``{"id", "values", ...}``."""
        with self._lock:
            records = self._live_index(index).namespaces.get(namespace or DEFAULT_NAMESPACE, {})
            return {rid: json.loads(json.dumps(r.to_json())) for rid, r in records.items()}

    # -- request handling

    def _handle(
        self,
        *,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw_body: bytes,
        index: _Index | None,
    ) -> tuple[int, Any, dict[str, str], bool]:
        data_plane = index is not None
        index_name = index.name if index is not None else None
        route = self._route(method, path, data_plane)
        endpoint = route[0] if route else "unknown"
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode(errors="replace")
        record = RecordedRequest(endpoint, method, path, query, headers, body, index_name)
        reply_headers = {"x-pinecone-request-id": str(next(self._request_ids))}

        with self._lock:
            self.calls[endpoint] += 1
            self.requests.append(record)
            failure = self._take_failure(endpoint, index_name or self._path_index(route))
            if failure is not None:
                record.injected = True
                self.injected[endpoint] += 1

        if failure is not None:
            if failure.delay_s:
                time.sleep(failure.delay_s)
            if failure.drop_connection:
                return 0, None, {}, True
            if failure.retry_after is not None:
                reply_headers["Retry-After"] = f"{failure.retry_after:g}"
            code = _STATUS_CODES.get(failure.status, "UNKNOWN")
            message = failure.message or f"Injected failure ({failure.status}) for {endpoint}"
            record.status = failure.status
            return (
                failure.status,
                self._error_body(ApiFailure(failure.status, code, message), data_plane),
                reply_headers,
                False,
            )

        try:
            if headers.get("api-key") != self.api_key:
                raise ApiFailure(401, "UNAUTHENTICATED", "Invalid API Key")
            if route is None:
                raise ApiFailure(404, "NOT_FOUND", f"No route for {method} {path}")
            if len(raw_body) > self.max_request_bytes:
                raise ApiFailure(
                    413,
                    "INVALID_ARGUMENT",
                    f"Request size {len(raw_body)} exceeds the maximum supported size of "
                    f"{self.max_request_bytes} bytes",
                )
            if isinstance(body, str):
                raise _bad("Request body is not valid JSON")
            with self._lock:
                status, payload = self._call(route, body, query, index)
        except ApiFailure as exc:
            record.status = exc.status
            return exc.status, self._error_body(exc, data_plane), reply_headers, False
        except Exception as exc:  # a bug in the fake (or a body it did not expect)
            record.status = 500
            failure = ApiFailure(500, "INTERNAL", f"FakePinecone error: {exc!r}")
            return 500, self._error_body(failure, data_plane), reply_headers, False
        record.status = status
        return status, payload, reply_headers, False

    @staticmethod
    def _error_body(exc: ApiFailure, data_plane: bool) -> dict[str, Any]:
        if data_plane:
            return {"code": _GRPC_CODES.get(exc.code, 2), "message": exc.message, "details": []}
        return {"error": {"code": exc.code, "message": exc.message}, "status": exc.status}

    def _take_failure(self, endpoint: str, index: str | None) -> _Failure | None:
        for failure in self._failures:
            if failure.matches(endpoint, index):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _path_index(route: tuple[str, str | None] | None) -> str | None:
        return route[1] if route else None

    @staticmethod
    def _route(method: str, path: str, data_plane: bool) -> tuple[str, str | None] | None:
        if data_plane:
            table = {
                ("POST", "/vectors/upsert"): "upsert",
                ("POST", "/query"): "query",
                ("GET", "/vectors/fetch"): "fetch",
                ("POST", "/vectors/delete"): "delete",
                ("POST", "/vectors/update"): "update",
                ("GET", "/vectors/list"): "list",
                ("POST", "/describe_index_stats"): "describe_index_stats",
                ("GET", "/describe_index_stats"): "describe_index_stats",
            }
            endpoint = table.get((method, path.rstrip("/") or "/"))
            return (endpoint, None) if endpoint else None
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["indexes"]:
            return {"POST": ("create_index", None), "GET": ("list_indexes", None)}.get(method)
        if len(parts) == 2 and parts[0] == "indexes":
            endpoint = {
                "GET": "describe_index",
                "PATCH": "configure_index",
                "DELETE": "delete_index",
            }.get(method)
            return (endpoint, parts[1]) if endpoint else None
        return None

    def _call(
        self,
        route: tuple[str, str | None],
        body: Any,
        query: dict[str, list[str]],
        index: _Index | None,
    ) -> tuple[int, Any]:
        endpoint, path_name = route
        if index is None:
            if endpoint == "create_index":
                return 201, self._create_index(body)
            if endpoint == "list_indexes":
                return 200, {"indexes": [ix.model() for ix in self._indexes.values()]}
            assert path_name is not None
            if endpoint == "describe_index":
                return 200, self._live_index(path_name).model()
            if endpoint == "configure_index":
                return 200, self._configure_index(path_name, body or {})
            return self._delete_index(path_name)

        if index.deleted:
            raise ApiFailure(404, "NOT_FOUND", f"Index {index.name} not found")
        if index.document_index:
            raise _bad(
                f"Index {index.name} has a document schema; use the Documents API "
                "(the fake only implements the vectors API)"
            )
        if endpoint == "fetch":
            return 200, self._fetch(index, query)
        if endpoint == "list":
            return 200, self._list(index, query)
        body = body if body is not None else {}
        if not isinstance(body, dict):
            raise _bad("Request body must be a JSON object")
        handler = {
            "upsert": self._upsert,
            "query": self._query,
            "delete": self._delete,
            "update": self._update,
            "describe_index_stats": self._stats,
        }[endpoint]
        return 200, handler(index, body)

    # -- control plane

    def _live_index(self, name: str) -> _Index:
        index = self._indexes.get(name)
        if index is None:
            raise ApiFailure(404, "NOT_FOUND", f"Resource {name} not found")
        return index

    def _create_index(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("Request body must be a JSON object")
        name = body.get("name") or f"index-{next(self._auto_names)}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise _bad(
                "Name must consist of lower case alphanumeric characters or '-', start and "
                "end with an alphanumeric character, and be at most 45 characters"
            )
        if name in self._indexes:
            raise ApiFailure(409, "ALREADY_EXISTS", f"Resource {name} already exists")
        schema = body.get("schema")
        fields = schema.get("fields") if isinstance(schema, dict) else None
        if not isinstance(fields, dict) or not fields:
            raise _bad("schema.fields must declare at least one field")
        dense = fields.get(DENSE_FIELD)
        sparse = fields.get(SPARSE_FIELD)
        document_index = any(key not in (DENSE_FIELD, SPARSE_FIELD) for key in fields)
        dimension: int | None = None
        metric = "dotproduct"
        if dense is not None:
            if not isinstance(dense, dict) or dense.get("type") != "dense_vector":
                raise _bad(f"{DENSE_FIELD} must be a dense_vector field")
            dimension = dense.get("dimension")
            if not isinstance(dimension, int) or not 1 <= dimension <= 20000:
                raise _bad("dense_vector dimension must be an integer from 1 to 20000")
            metric = dense.get("metric", "cosine")
            if metric not in METRICS:
                raise _bad(f"metric must be one of {list(METRICS)}, got {metric!r}")
        if sparse is not None and (
            not isinstance(sparse, dict) or sparse.get("type") != "sparse_vector"
        ):
            raise _bad(f"{SPARSE_FIELD} must be a sparse_vector field")
        deployment = body.get("deployment") or {
            "deployment_type": "managed",
            "cloud": "aws",
            "region": "us-east-1",
        }
        if deployment.get("deployment_type") != "managed":
            raise _bad("the fake only serves managed (serverless) deployments")
        index = _Index(
            name=name,
            schema={"fields": fields},
            deployment=deployment,
            deletion_protection=body.get("deletion_protection") or "disabled",
            tags=body.get("tags"),
            read_capacity={"mode": "OnDemand", "status": {"state": "Ready"}},
            dimension=dimension,
            metric=metric,
            vector_type="dense" if dense is not None else "sparse",
            sparse_field=sparse is not None,
            document_index=document_index,
        )
        server, index.host = _serve(self, self.bind, index)
        self._servers.append(server)
        self._indexes[name] = index
        return index.model()

    def _configure_index(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        index = self._live_index(name)
        if "deletion_protection" in body:
            index.deletion_protection = body["deletion_protection"]
        if body.get("tags"):
            tags = dict(index.tags or {})
            for key, value in body["tags"].items():
                if value == "":
                    tags.pop(key, None)
                else:
                    tags[key] = value
            index.tags = tags or None
        return index.model()

    def _delete_index(self, name: str) -> tuple[int, Any]:
        index = self._live_index(name)
        if index.deletion_protection == "enabled":
            raise ApiFailure(
                403,
                "FORBIDDEN",
                "Deletion protection is enabled for this index. "
                "Disable deletion protection before retrying.",
            )
        index.deleted = True
        del self._indexes[name]
        return 202, None

    # -- data plane

    @staticmethod
    def _namespace(body_or_value: Any) -> str:
        namespace = body_or_value or ""
        if not isinstance(namespace, str):
            raise _bad("namespace must be a string")
        return namespace or DEFAULT_NAMESPACE

    def _check_sparse_allowed(self, index: _Index, what: str) -> None:
        if index.vector_type == "sparse":
            return
        if self.hybrid_requires_sparse_field and not index.sparse_field:
            raise _bad(
                f"{what}: index {index.name} declares no sparse_vector field, so it does not "
                "accept sparse values"
            )
        if index.metric != "dotproduct":
            raise _bad(
                f"{what}: Index configuration does not support sparse values - only indexes "
                "that are sparse or using dotproduct are supported"
            )

    def _build_record(self, index: _Index, raw: Any) -> _Record:
        if not isinstance(raw, dict):
            raise _bad("Each vector must be a JSON object")
        vid = raw.get("id")
        if not isinstance(vid, str) or not vid or len(vid) > 512:
            raise _bad("Vector id must be a non-empty string of at most 512 characters")
        values = _parse_values(raw.get("values"), "values")
        sparse = _parse_sparse(raw.get("sparseValues"), "sparse values")
        if index.vector_type == "dense":
            if len(values) != index.dimension:
                raise _bad(
                    f"Vector dimension {len(values)} does not match the dimension of the "
                    f"index {index.dimension}"
                )
        else:
            if values:
                raise _bad("Sparse indexes do not accept dense values")
            if sparse is None:
                raise _bad("Sparse vector must contain at least one value")
        if sparse is not None:
            self._check_sparse_allowed(index, "Upsert")
        return _Record(vid, values, sparse, _clean_metadata(raw.get("metadata")))

    def _upsert(self, index: _Index, body: dict[str, Any]) -> dict[str, Any]:
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise _bad("vectors must be a non-empty array")
        if len(vectors) > self.max_batch:
            raise _bad(
                f"The number of vectors in a request ({len(vectors)}) exceeds the maximum "
                f"of {self.max_batch}"
            )
        records = [self._build_record(index, raw) for raw in vectors]
        namespace = index.namespaces.setdefault(self._namespace(body.get("namespace")), {})
        for record in records:
            namespace[record.id] = record
        return {"upsertedCount": len(records)}

    def _records(self, index: _Index, namespace: str) -> dict[str, _Record]:
        return index.namespaces.get(namespace, {})

    def _query(self, index: _Index, body: dict[str, Any]) -> dict[str, Any]:
        top_k = body.get("topK")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 10000:
            raise _bad("topK must be an integer from 1 to 10000")
        namespace = self._namespace(body.get("namespace"))
        records = self._records(index, namespace)
        vector = body.get("vector")
        sparse = _parse_sparse(body.get("sparseVector"), "sparse vector")
        if body.get("id") is not None:
            if vector is not None or sparse is not None:
                raise _bad("Cannot provide both 'ID' and 'vector' at the same time")
            stored = records.get(body["id"])
            if stored is None:
                return {
                    "matches": [],
                    "namespace": body.get("namespace") or "",
                    "usage": {"readUnits": 1},
                }
            dense_q = stored.values or None
            sparse_q = stored.sparse if index.vector_type == "sparse" else None
        else:
            dense_q = _parse_values(vector, "vector") if vector is not None else None
            sparse_q = sparse
            if sparse_q is not None:
                self._check_sparse_allowed(index, "Query")
        if index.vector_type == "dense":
            if dense_q is None:
                raise _bad("A dense vector is required to query a dense index")
            if len(dense_q) != index.dimension:
                raise _bad(
                    f"Query vector dimension {len(dense_q)} does not match the dimension of "
                    f"the index {index.dimension}"
                )
        else:
            if dense_q:
                raise _bad("Sparse indexes do not accept a dense query vector")
            if sparse_q is None:
                raise _bad("A sparse vector is required to query a sparse index")
        predicate = compile_filter(body["filter"]) if body.get("filter") is not None else None
        scored = []
        for record in records.values():
            if predicate is not None and not predicate(record.metadata):
                continue
            score = 0.0
            if dense_q is not None and index.vector_type == "dense":
                score = _dense_score(index.metric, dense_q, record.values)
            if sparse_q is not None:
                score += _sparse_dot(sparse_q, record.sparse)
            scored.append((score, record))
        descending = index.metric != "euclidean" or index.vector_type == "sparse"
        scored.sort(key=lambda pair: (-pair[0] if descending else pair[0], pair[1].id))
        include_values = bool(body.get("includeValues"))
        include_metadata = bool(body.get("includeMetadata"))
        matches = []
        for score, record in scored[:top_k]:
            match = record.to_json(values=include_values, metadata=include_metadata)
            match["score"] = _round_score(score)
            matches.append(match)
        return {
            "matches": matches,
            "namespace": body.get("namespace") or "",
            "usage": {"readUnits": max(1, math.ceil(len(records) / 1000))},
        }

    def _fetch(self, index: _Index, query: dict[str, list[str]]) -> dict[str, Any]:
        ids = query.get("ids", [])
        if not ids:
            raise _bad("ids must contain at least one id")
        if len(ids) > 1000:
            raise _bad("fetch accepts at most 1000 ids")
        raw_namespace = (query.get("namespace") or [""])[0]
        records = self._records(index, self._namespace(raw_namespace))
        return {
            "vectors": {vid: records[vid].to_json() for vid in ids if vid in records},
            "namespace": raw_namespace,
            "usage": {"readUnits": 1},
        }

    def _delete(self, index: _Index, body: dict[str, Any]) -> dict[str, Any]:
        namespace = self._namespace(body.get("namespace"))
        ids, delete_all, expression = body.get("ids"), body.get("deleteAll"), body.get("filter")
        if sum(x is not None and x is not False for x in (ids, delete_all, expression)) != 1:
            raise _bad("Exactly one of ids, deleteAll or filter must be given")
        records = index.namespaces.get(namespace)
        if not records:
            if self.strict_namespace_delete:
                raise ApiFailure(404, "NOT_FOUND", "Namespace not found")
            return {}
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise _bad("ids must be an array of strings")
            if len(ids) > 1000:
                raise _bad("delete accepts at most 1000 ids")
            for vid in ids:
                records.pop(vid, None)
        elif delete_all:
            records.clear()
        else:
            predicate = compile_filter(expression)
            for vid in [vid for vid, r in records.items() if predicate(r.metadata)]:
                del records[vid]
        if not records:
            del index.namespaces[namespace]
        return {}

    def _update(self, index: _Index, body: dict[str, Any]) -> dict[str, Any]:
        namespace = self._namespace(body.get("namespace"))
        records = self._records(index, namespace)
        set_metadata = _clean_metadata(body.get("setMetadata"))
        if body.get("filter") is not None:
            predicate = compile_filter(body["filter"])
            targets = [r for r in records.values() if predicate(r.metadata)]
            if not body.get("dryRun"):
                for record in targets:
                    record.metadata = {**(record.metadata or {}), **(set_metadata or {})}
            return {"matchedRecords": len(targets)}
        record = records.get(body.get("id"))
        if record is None:
            raise ApiFailure(404, "NOT_FOUND", f"Vector {body.get('id')} not found")
        if body.get("values") is not None:
            patched = self._build_record(index, {"id": record.id, "values": body["values"]})
            record.values = patched.values
        if body.get("sparseValues") is not None:
            self._check_sparse_allowed(index, "Update")
            record.sparse = _parse_sparse(body["sparseValues"], "sparse values")
        if set_metadata:
            record.metadata = {**(record.metadata or {}), **set_metadata}
        return {}

    def _list(self, index: _Index, query: dict[str, list[str]]) -> dict[str, Any]:
        raw_namespace = (query.get("namespace") or [""])[0]
        prefix = (query.get("prefix") or [""])[0]
        limit = int((query.get("limit") or ["100"])[0])
        start = int((query.get("paginationToken") or ["0"])[0])
        ids = sorted(
            vid
            for vid in self._records(index, self._namespace(raw_namespace))
            if vid.startswith(prefix)
        )
        page = ids[start : start + limit]
        response: dict[str, Any] = {
            "vectors": [{"id": vid} for vid in page],
            "namespace": raw_namespace,
            "usage": {"readUnits": 1},
        }
        if start + limit < len(ids):
            response["pagination"] = {"next": str(start + limit)}
        return response

    def _stats(self, index: _Index, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("filter") is not None:
            raise _bad(
                "Serverless and starter indexes do not support describing index stats with "
                "metadata filtering"
            )
        namespaces = {
            name: {"vectorCount": len(records)}
            for name, records in sorted(index.namespaces.items())
            if records
        }
        stats: dict[str, Any] = {
            "namespaces": namespaces,
            "indexFullness": 0.0,
            "totalVectorCount": sum(ns["vectorCount"] for ns in namespaces.values()),
            "metric": index.metric,
            "vectorType": index.vector_type,
        }
        if index.dimension is not None:
            stats["dimension"] = index.dimension
        return stats
