"""Schemathesis fuzzes every operation of the app's own /openapi.json in-process (WSGI), with
data that fits the spec and data that does not: no answer may be a 5xx, and every answer must
be documented (status, content type, headers and body schema).

The app runs on the fake models of ``tests/api/conftest.py``, loaded before the fuzzing starts
(so /readyz is 200, not its documented 503 while loading), and a fuzzed chat runs the real route
and graph in milliseconds. The job kinds are the real ones with their real parameter checks,
but the work they would start (a child process that ingests, fine-tunes or compares for
minutes) is replaced by :class:`CheckedStub`. An upload is random bytes or a small PNG that
schemathesis makes for ``format: binary`` images, so assessments run both approaches too.

Seeds are random: a failure prints the seed that reproduces it (``--hypothesis-seed``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.chat_model import LocalChatModel
from api.jobs.kinds import KINDS, WorkerJob
from api.server.openapi import spec
from api.server.services import EXTENSION
from api.settings import Settings
from tests.agents.fakes import FakeVision, ScriptedBackend, report_json
from tests.api.test_app_assessments import VISION_ANSWER

# per operation and generation mode: about 20 s in all on 2 cores; raise it for a longer hunt
EXAMPLES = int(os.environ.get("TUNEGRAPH_FUZZ_EXAMPLES", "100"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PATHS = spec(Settings(), list(KINDS))["paths"]
OPERATIONS = [
    (path, method) for path, item in PATHS.items() for method in item if method != "parameters"
]


@dataclass
class Tireless(ScriptedBackend):
    """Answers every request with the same report (valid for chat and for the agentic
    assessment's report), so no example fails for want of a scripted reply."""

    def stream(self, request):
        self.replies = [report_json()]
        return super().stream(request)


@dataclass
class TirelessVision(FakeVision):
    """The fine-tuned vision model, answering every photo with the same assessment."""

    def assess(self, images, claim, feedback=None) -> str:
        self.answers = [json.dumps(VISION_ANSWER)]
        return super().assess(images, claim, feedback)


@dataclass(frozen=True)
class CheckedStub:
    """A real job kind's submission check, and work that ends at once."""

    kind: WorkerJob

    def check(self, params):
        self.kind.check(params)

    def __call__(self, params, progress, log, cancel):
        return {}


def _takes_input(path: str, method: str) -> bool:
    """Whether the operation has parameters or a body that invalid data can be made for."""
    item = PATHS[path]
    return bool(item.get("parameters") or item[method].get("parameters")) or (
        "requestBody" in item[method]
    )


def fuzz(operation, mode: GenerationMode, examples: int) -> None:
    """Up to ``examples`` generated calls of ``operation``, each checked against the spec."""

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def call(case):
        case.call_and_validate(checks=CHECKS)

    call()


@pytest.fixture
def fuzzed(make_app, context, settings):
    context.llm = LocalChatModel(backend=Tireless())
    context.vision = TirelessVision([])
    app = make_app(kinds={kind: CheckedStub(WorkerJob(kind, settings)) for kind in KINDS})
    app.extensions[EXTENSION].runtime.context()  # load the (fake) models now
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.mark.parametrize(
    "mode",
    [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    ids=["valid", "invalid"],
)
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_operation_answers_as_documented(fuzzed, path, method, mode):
    if mode is GenerationMode.NEGATIVE and not _takes_input(path, method):
        pytest.skip("no parameters or body to make invalid")
    fuzz(fuzzed[path][method], mode, EXAMPLES)


def test_calls_without_a_key_answer_as_documented(make_app):
    """With keys (and /metrics guarded), each secured operation answers 401 with its challenge,
    then 429 with Retry-After once this address has failed too often (a new app each)."""
    for path, method in OPERATIONS:
        app = make_app(api_keys=("k-fuzz",), metrics_require_key=True, auth_failures_per_minute=5)
        app.extensions[EXTENSION].runtime.context()
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        fuzz(schema[path][method], GenerationMode.POSITIVE, 10)
