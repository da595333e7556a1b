"""``POST /v1/assessments`` with ``stream=true``: each approach's result as a server-sent event
as soon as it finishes, then the agreement, then ``done`` with the answer the request without
``stream`` would have had; and the cited manual passages' text in both forms."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field

from flask.testing import FlaskClient

from agents.chat_model import LocalChatModel
from tests.agents.conftest import MANUAL
from tests.agents.fakes import FakeVision, ScriptedBackend, fake_llm
from tests.api.conftest import jpeg, report
from tests.api.test_app_assessments import VISION_ANSWER
from tests.security.test_backpressure import until


@dataclass
class HeldBackend(ScriptedBackend):
    """Writes its next reply only once the test sets ``go``; counts the tokens it gave out."""

    go: threading.Event = field(default_factory=threading.Event)
    given: int = 0

    def stream(self, request):
        assert self.go.wait(20), "the test never let the model answer"
        for event in super().stream(request):
            self.given += 1
            yield event


def held_llm(*replies) -> LocalChatModel:
    return LocalChatModel(backend=HeldBackend(list(replies)))


def post(client, stream: str | None = "true", images=None, **fields):
    files = [(io.BytesIO(data), name) for name, data in (images or [("hood.jpg", jpeg())])]
    data = {"images": files, **fields} | ({"stream": stream} if stream else {})
    return client.post("/v1/assessments", data=data, content_type="multipart/form-data")


def read_events(response):
    """The response's events, parsed, as they arrive (``event:`` and ``data:`` lines)."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in event.split("\n"))
            data = json.loads(lines["data"])
            assert data["type"] == lines["event"]
            yield data
    assert buffer == ""


def streaming_client(app) -> FlaskClient:
    """A client that leaves the body unread until the test reads it (the checked client of
    conftest reads every body at once)."""
    return FlaskClient(app, app.response_class)


def test_each_approach_is_an_event_as_soon_as_it_finishes(app, context):
    context.llm = held_llm(report())  # the agentic report waits for the test
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    response = post(streaming_client(app))
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = read_events(response)
    first = next(events)
    # the fine-tuned result arrived while the agentic approach could not finish its report
    assert (first["type"], first["approach"]) == ("assessment", "finetuned")
    assert context.llm.backend.given == 0
    context.llm.backend.go.set()
    second, agreement, done = events
    assert (second["type"], second["approach"]) == ("assessment", "agentic")
    assert agreement["type"] == "agreement" and done["type"] == "done"
    assert done["status"] == 200
    body = done["body"]
    assert body["object"] == "assessment" and body["approach"] == "both"
    # the events say what the answer says
    assert body["assessments"] == {e["approach"]: e["assessment"] for e in (first, second)}
    assert body["agreement"] == agreement["agreement"]
    assert agreement["agreement"]["damages"]["shared"] == ["hood:dent"]
    assert body["timings_ms"]["finetuned"] == first["ms"]
    assert body["timings_ms"]["agentic"] == second["ms"]
    assert body["passages"] == second["passages"] and first["passages"] == {}
    assert body["errors"] == {} and body["notes"] == {}


def test_the_stream_and_the_json_answer_have_the_same_fields(client, context):
    for stream in (None, "true", "false"):
        context.llm = fake_llm(report())
        context.vision = FakeVision([json.dumps(VISION_ANSWER)])
        response = post(client, stream)
        if stream == "true":
            *_, done = read_events(response)
            body = done["body"]
        else:
            assert response.mimetype == "application/json"
            body = response.get_json()
        assert list(body) == [
            "id", "object", "approach", "assessments", "errors", "notes", "passages",
            "agreement", "timings_ms",
        ]  # fmt: skip


def test_a_failing_approach_is_an_error_event_beside_the_other(client, context):
    context.llm = fake_llm(report())  # no vision model: the fine-tuned approach fails
    events = list(read_events(post(client)))
    assert [(e["type"], e.get("approach")) for e in events] == [
        ("error", "finetuned"),
        ("assessment", "agentic"),
        ("done", None),
    ]  # no agreement without two assessments
    error = events[0]["error"]
    assert error["code"] == "model_not_trained" and "tunegraph finetune vision" in error["message"]
    done = events[-1]
    assert done["status"] == 200
    assert done["body"]["errors"] == {"finetuned": error}
    assert done["body"]["agreement"] is None


def test_when_every_approach_fails_done_carries_the_error_answer(client):
    answer = post(client, stream=None, approach="finetuned")
    assert answer.status_code == 503
    response = post(client, approach="finetuned")
    assert response.status_code == 200  # the stream had started
    error, done = read_events(response)
    assert error == {"type": "error", "approach": "finetuned", **answer.get_json()}
    assert (done["status"], done["body"]) == (503, answer.get_json())


def test_bad_requests_are_refused_before_any_stream(client, context):
    response = post(client, stream="yes")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["param"], error["code"]) == ("stream", "invalid_value")
    assert error["message"] == "unknown stream 'yes'; use one of true, false"
    response = post(client, images=[("cut.jpg", jpeg(size=(320, 240))[:-200])])
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert response.get_json()["error"]["message"].startswith("cut.jpg: ")
    assert context.damage_model.calls == 0


def test_closing_the_stream_stops_the_report_model_and_frees_its_queue(app, context):
    context.llm = held_llm(report())
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    response = post(streaming_client(app))
    first = next(read_events(response))
    assert first["approach"] == "finetuned"
    response.close()  # the client went away
    context.llm.backend.go.set()
    text = app.extensions["tunegraph"].runtime.queues["text"]
    assert until(lambda: text.admitted == 0)
    # the report model stopped at its first token, not at the end of the report
    words = len(report().split(" "))
    assert context.llm.backend.given == 1 < words


def test_the_answer_carries_the_text_of_each_cited_manual_passage(client, context):
    context.llm = fake_llm(report())
    body = post(client, stream=None, approach="agentic").get_json()
    agentic = body["assessments"]["agentic"]
    cited = [e["id"] for e in agentic["evidence"] if e["source"] == "manual"]
    assert cited == ["blk-hood-dent", "blk-torque"]
    assert body["passages"] == {hit.id: hit.text for hit in MANUAL}
    assert {r["reference"] for r in agentic["repair_recommendations"]} <= set(body["passages"])
