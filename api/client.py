"""The bundled HTTP client of the tunegraph API (httpx): chat, streaming chat, assessments, jobs
and compare reports.

    with TunegraphClient("http://127.0.0.1:8000", api_key="k") as client:
        answer = client.chat([{"role": "user", "content": "Hood hinge bolt torque?"}], model="rag")
        print(answer.text, answer.usage)

Refused or failed requests raise :class:`APIError` built from the server's error envelope.
429 (after its ``Retry-After``), 5xx answers and connection errors are retried with exponential
backoff; a job submission only where the server certainly created no job.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ingest.assessment import Assessment, ClaimContext

DEFAULT_TIMEOUT_S = 300.0  # an assessment on CPU takes a while; the server has its own limit
MAX_RETRY_AFTER_S = 60.0
# Answers that mean "not processed, try again": safe to retry even for a job submission.
_NOT_PROCESSED = (429, 503)


class APIError(Exception):
    """An error answer of the API (or no answer: ``status`` None, type ``connection_error``).

    ``status`` is also None for an error event inside a stream, whose HTTP status was 200.
    """

    def __init__(
        self,
        status: int | None,
        type: str,
        message: str,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.code, self.param = (
            status, type, message, code, param,
        )  # fmt: skip

    @classmethod
    def from_body(cls, status: int | None, body: Any, fallback: str = "") -> APIError:
        """From an OpenAI error envelope, or a generic error when the body is not one."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(status, "http_error", fallback or f"HTTP {status}")
        return cls(
            status,
            str(error.get("type") or "error"),
            str(error.get("message") or fallback),
            error.get("code"),
            error.get("param"),
        )

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else self.type
        return f"{self.message} ({where}{', ' + self.code if self.code else ''})"


@dataclass(frozen=True)
class ChatResult:
    """A chat completion: the answer's text, the model, token usage and the whole body."""

    text: str
    model: str
    usage: dict[str, int]
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class AssessmentResult:
    """``POST /v1/assessments``: each approach's Assessment, the failed ones' errors (the error
    objects of the envelope), their agreement (with ``both``) and timings."""

    approach: str
    assessments: dict[str, Assessment]
    errors: dict[str, dict[str, Any]]
    agreement: dict[str, Any] | None
    timings_ms: dict[str, float]
    raw: dict[str, Any] = field(repr=False)


class TunegraphClient:
    """A client of one tunegraph server; usable as a context manager (closes its connections)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> TunegraphClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- chat ----------------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model ids the server offers (chat models and ``assessment-*`` approaches)."""
        return [m["id"] for m in self._json("GET", "/v1/models")["data"]]

    def chat(
        self, messages: Sequence[Mapping[str, Any]], model: str = "rag", **params: Any
    ) -> ChatResult:
        """One chat completion; ``params`` are OpenAI's (max_tokens, temperature, stop...)."""
        body = self._json("POST", "/v1/chat/completions", json=_chat_body(messages, model, params))
        return ChatResult(
            text=body["choices"][0]["message"]["content"] or "",
            model=body["model"],
            usage=body.get("usage") or {},
            raw=body,
        )

    def chat_stream(
        self, messages: Sequence[Mapping[str, Any]], model: str = "rag", **params: Any
    ) -> Iterator[str]:
        """The answer's text deltas as the server streams them (server-sent events).

        Retried like any request until the stream starts; an error event inside the stream
        raises :class:`APIError` (status None).
        """
        body = {**_chat_body(messages, model, params), "stream": True}
        with closing(self._send("POST", "/v1/chat/completions", json=body)) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise APIError.from_body(None, event)
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

    # ---- assessments ---------------------------------------------------------------------

    def assess(
        self,
        image_paths: Sequence[str | Path],
        approach: str = "both",
        claim: Mapping[str, Any] | ClaimContext | None = None,
    ) -> AssessmentResult:
        """Upload photos for an assessment by ``approach`` (finetuned, agentic or both)."""
        from ingest.assessment import Assessment

        files = []
        for image in image_paths:
            path = Path(image)
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files.append(("images", (path.name, path.read_bytes(), kind)))
        data = {"approach": approach}
        if claim is not None:
            data["claim"] = (
                claim.model_dump_json() if hasattr(claim, "model_dump_json") else json.dumps(claim)
            )
        body = self._json("POST", "/v1/assessments", data=data, files=files)
        return AssessmentResult(
            approach=body["approach"],
            assessments={
                name: Assessment.model_validate(value)
                for name, value in body["assessments"].items()
            },
            errors=body.get("errors") or {},
            agreement=body.get("agreement"),
            timings_ms=body.get("timings_ms") or {},
            raw=body,
        )

    # ---- files (a job's input) -----------------------------------------------------------

    def upload(self, paths: Sequence[str | Path], folder: str = "") -> list[dict[str, Any]]:
        """Send files to this key's upload folder on the server (into ``folder``; a folder
        given in ``paths`` sends the files directly in it); jobs then name them by the
        ``path`` each answer holds, e.g. ``submit_job("ingest-manuals", {"paths": [folder]})``."""
        files = []
        for item in paths:
            item = Path(item)
            for path in sorted(item.iterdir()) if item.is_dir() else [item]:
                if path.is_file():
                    files.append(
                        ("file", (path.name, path.read_bytes(), "application/octet-stream"))
                    )
        if not files:
            raise ValueError(f"no file to upload in {', '.join(str(p) for p in paths)}")
        body = self._json("POST", "/v1/files", data={"folder": folder}, files=files)
        return body["data"]

    def files(self) -> list[dict[str, Any]]:
        """The files in this key's upload folder (``path``, ``bytes``)."""
        return self._json("GET", "/v1/files")["data"]

    # ---- jobs ----------------------------------------------------------------------------

    def submit_job(self, kind: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Queue a background job; the job as the server shows it (state ``queued``)."""
        body = {"kind": kind, "params": dict(params or {})}
        # Not retried after a 500 or a dropped answer: the job may exist already.
        return self._json("POST", "/v1/jobs", json=body, idempotent=False)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def jobs(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"state": state} if state else {})
        return self._json("GET", "/v1/jobs", params=params)["data"]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/jobs/{job_id}")

    def job_report(self, job_id: str, format: str = "html") -> bytes:
        """The report file of a succeeded ``compare`` job: ``html`` (self-contained), ``md``
        or ``json``."""
        path = f"/v1/jobs/{job_id}/report"
        with closing(self._send("GET", path, params={"format": format})) as response:
            return response.read()

    def wait_job(
        self, job_id: str, poll: float = 1.0, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll until the job has finished (any final state); ``TimeoutError`` after
        ``timeout`` seconds."""
        from api.jobs.store import FINISHED

        deadline = None if timeout is None else time.monotonic() + timeout
        while (job := self.job(job_id))["state"] not in FINISHED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout} s")
            time.sleep(poll)
        return job

    # ---- transport -----------------------------------------------------------------------

    def _json(self, method: str, path: str, idempotent: bool = True, **kwargs: Any) -> Any:
        with closing(self._send(method, path, idempotent=idempotent, **kwargs)) as response:
            response.read()
            return response.json()

    def _send(
        self, method: str, path: str, idempotent: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """A successful response, body not read yet (the caller closes it); retries, then
        :class:`APIError`."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                # a refused connection never reached the server: always safe to retry
                if last or not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise APIError(
                        None,
                        "connection_error",
                        f"cannot reach {self.base_url}: {exc or type(exc).__name__}",
                        "connection_error",
                    ) from exc
                time.sleep(self._delay(attempt))
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            retryable = response.status_code in _NOT_PROCESSED or (
                idempotent and response.status_code >= 500
            )
            if last or not retryable:
                raise _error(response)
            time.sleep(self._delay(attempt, response.headers.get("Retry-After")))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
            except ValueError:
                pass  # an HTTP date: fall back to the backoff
        return self.backoff_s * 2**attempt


def _chat_body(
    messages: Sequence[Mapping[str, Any]], model: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    return {"model": model, "messages": [dict(m) for m in messages], **params}


def _error(response: httpx.Response) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return APIError.from_body(
        response.status_code, body, f"HTTP {response.status_code}: {response.text[:200]}"
    )
