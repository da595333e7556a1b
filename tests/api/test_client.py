"""The bundled client (api/client.py) against a live server over the fake models, and its
retries against tiny fake transports."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from agents.backends.base import GenerationError
from api.client import APIError, AssessmentResult, ChatResult, TunegraphClient
from ingest.assessment import Assessment
from tests.agents.conftest import PHOTOS
from tests.agents.fakes import fake_llm
from tests.api.conftest import jpeg, report, serving
from tests.api.test_app_assessments import VISION_ANSWER

QUESTION = [{"role": "user", "content": "What is the hood hinge bolt torque?"}]


@pytest.fixture
def api(live):
    with TunegraphClient(live, backoff_s=0.01) as client:
        yield client


def test_models_list_chat_models_and_assessment_approaches(api):
    assert api.models() == [
        "base", "rag", "finetuned", "finetuned-rag", "agent",
        "assessment-finetuned", "assessment-agentic", "assessment-both",
    ]  # fmt: skip


def test_chat_returns_a_typed_result(api, context):
    context.llm = fake_llm("It is 24 Nm.")
    result = api.chat(QUESTION, model="rag", max_tokens=16, temperature=0.1)
    assert isinstance(result, ChatResult)
    assert (result.text, result.model) == ("It is 24 Nm.", "rag")
    assert result.usage == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert result.raw["tunegraph"]["sources"] == ["blk-hood-dent", "blk-torque"]
    (request,) = context.llm.backend.requests
    assert (request.max_tokens, request.temperature) == (16, 0.1)


def test_chat_stream_yields_the_deltas_and_stops_at_done(api, context):
    context.llm = fake_llm("It is 24 Nm.")
    deltas = list(api.chat_stream(QUESTION, model="rag"))
    assert deltas == ["It", " is", " 24", " Nm."]


def test_an_error_event_in_a_stream_raises_a_typed_error(api, context):
    context.llm = fake_llm(GenerationError("the backend ran out of memory"))
    with pytest.raises(APIError) as caught:
        list(api.chat_stream(QUESTION, model="rag"))
    error = caught.value
    assert error.status is None and error.code == "generation_failed"
    assert "out of memory" in error.message


def test_assess_both_returns_typed_assessments_and_their_agreement(api, context, tmp_path):
    from tests.agents.fakes import FakeVision

    context.llm = fake_llm(report())
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    (tmp_path / "a.png").write_bytes(PHOTOS["p/own.png"])
    (tmp_path / "b.jpg").write_bytes(jpeg(3))
    claim = {"policy_id": "POL-1", "description": "Hood dent", "claimed_amount": 900}
    result = api.assess([tmp_path / "a.png", tmp_path / "b.jpg"], approach="both", claim=claim)
    assert isinstance(result, AssessmentResult) and result.approach == "both"
    assert set(result.assessments) == {"finetuned", "agentic"}
    assert all(isinstance(a, Assessment) for a in result.assessments.values())
    assert result.assessments["finetuned"].cost_estimate.min == 700
    assert result.errors == {}
    assert (result.agreement["agreed"], result.agreement["checked"]) == (5, 6)
    assert set(result.timings_ms) == {"finetuned", "agentic", "total"}


def test_assess_reports_a_failed_approach_beside_the_other(api, context, tmp_path):
    context.llm = fake_llm(report())
    (tmp_path / "hood.jpg").write_bytes(jpeg())
    result = api.assess([tmp_path / "hood.jpg"])
    assert list(result.assessments) == ["agentic"] and result.agreement is None
    assert result.errors["finetuned"]["code"] == "model_not_trained"


def test_jobs_submit_wait_list_show_and_cancel(api, release):
    job = api.submit_job("count", {"n": 2})
    assert job["state"] == "queued"
    done = api.wait_job(job["id"], poll=0.02, timeout=5)
    assert done["state"] == "succeeded" and done["result"] == {"counted": 2}
    assert api.job(job["id"])["log"] == ["step 1", "step 2"]

    running = api.submit_job("release")
    assert release.started.wait(5)
    assert api.cancel_job(running["id"])["cancel_requested"] is True
    assert api.wait_job(running["id"], poll=0.02, timeout=5)["state"] == "cancelled"
    assert [j["id"] for j in api.jobs()] == [running["id"], job["id"]]
    assert [j["id"] for j in api.jobs(state="succeeded")] == [job["id"]]
    with pytest.raises(APIError) as caught:
        api.cancel_job(job["id"])
    assert (caught.value.status, caught.value.code) == (409, "job_finished")
    with pytest.raises(APIError, match="unknown job kind 'nope'"):
        api.submit_job("nope")


@pytest.fixture
def compare_api(compare_app):
    with serving(compare_app) as url, TunegraphClient(url, backoff_s=0.01) as client:
        yield client


def test_job_report_downloads_a_compare_jobs_report(compare_api, fake_compare, settings):
    job = compare_api.submit_job("compare", {"name": "c1"})
    assert compare_api.wait_job(job["id"], poll=0.02, timeout=5)["state"] == "succeeded"
    assert compare_api.job_report(job["id"]) == b"<h1>tunegraph compare: c1</h1>"
    for fmt in ("md", "json"):
        expected = (settings.runs_dir / "c1" / f"report.{fmt}").read_bytes()
        assert compare_api.job_report(job["id"], format=fmt) == expected

    held = compare_api.submit_job("compare", {"name": "c2", "hold": True})
    assert fake_compare.started.wait(5)
    with pytest.raises(APIError) as caught:
        compare_api.job_report(held["id"])
    assert (caught.value.status, caught.value.code) == (409, "job_not_finished")
    fake_compare.release.set()
    with pytest.raises(APIError) as caught:
        compare_api.job_report("job_missing")
    assert (caught.value.status, caught.value.code) == (404, "job_not_found")
    with pytest.raises(APIError) as caught:
        compare_api.job_report(job["id"], format="pdf")
    assert caught.value.status == 400 and caught.value.param == "format"


def test_cli_jobs_report_writes_the_file_or_prints_it(compare_api, tmp_path):
    from click.testing import CliRunner

    from api.cli.main import main

    job = compare_api.submit_job("compare", {"name": "c3"})
    compare_api.wait_job(job["id"], poll=0.02, timeout=5)
    url = ["--url", compare_api.base_url]
    runner = CliRunner()
    out = tmp_path / "report.md"
    result = runner.invoke(
        main, ["client", "jobs", "report", job["id"], "--format", "md", "--out", str(out), *url]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == "# tunegraph compare: c3\n"
    assert result.output == f"{out} (24 bytes)\n"
    result = runner.invoke(main, ["client", "jobs", "report", job["id"], *url])
    assert result.exit_code == 0 and result.stdout == "<h1>tunegraph compare: c3</h1>"
    result = runner.invoke(main, ["client", "jobs", "report", "job_missing", *url])
    assert result.exit_code == 1
    assert "Error: no job 'job_missing' (HTTP 404, job_not_found)" in result.output
    result = runner.invoke(main, ["client", "jobs", "report", job["id"], "--format", "pdf", *url])
    assert result.exit_code == 2 and "'pdf' is not one of 'html', 'md', 'json'" in result.output


def test_a_missing_or_wrong_key_is_a_401_api_error(make_app):
    with serving(make_app(api_keys=("k-one",))) as url:
        with TunegraphClient(url) as anonymous, pytest.raises(APIError) as caught:
            anonymous.models()
        error = caught.value
        assert (error.status, error.type, error.code) == (
            401, "authentication_error", "missing_api_key"
        )  # fmt: skip
        assert "Authorization: Bearer" in error.message and "HTTP 401" in str(error)
        with TunegraphClient(url, api_key="k-one") as keyed:
            assert "rag" in keyed.models()


def test_a_503_is_retried_until_the_server_answers(make_app, context):
    # The first model load fails (503 models_unavailable); the runtime tries again on the
    # next request, which the client sends after its backoff.
    attempts = []

    def load_once_failing(_settings):
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("the disk was not mounted yet")
        return context

    app = make_app()
    app.extensions["tunegraph"].runtime._factory = load_once_failing
    context.llm = fake_llm("24 Nm.")
    with serving(app) as url, TunegraphClient(url, backoff_s=0.01) as client:
        assert client.chat(QUESTION, model="base").text == "24 Nm."
    assert len(attempts) == 2


# ---- retries against fake transports -----------------------------------------------------


def scripted(*answers):
    """A transport answering with ``answers`` in turn: (status, headers, body) or an exception."""
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[len(seen) - 1]
        if isinstance(answer, Exception):
            raise answer
        status, headers, body = answer
        return httpx.Response(status, headers=headers, json=body)

    return httpx.MockTransport(handle), seen


MODELS = (200, {}, {"object": "list", "data": [{"id": "rag"}]})
BUSY = (503, {}, {"error": {"type": "service_unavailable_error", "message": "busy",
                            "param": None, "code": "models_unavailable"}})  # fmt: skip


@pytest.fixture
def sleeps(monkeypatch):
    waited = []
    monkeypatch.setattr("api.client.time.sleep", waited.append)
    return waited


def test_429_honours_retry_after_and_5xx_backs_off_exponentially(sleeps):
    limited = (429, {"Retry-After": "7"}, {"error": {"message": "slow down"}})
    transport, seen = scripted(BUSY, limited, BUSY, MODELS)
    client = TunegraphClient("http://tg", transport=transport, retries=3, backoff_s=0.5)
    assert client.models() == ["rag"]
    assert len(seen) == 4 and sleeps == [0.5, 7.0, 2.0]


def test_retries_run_out_with_the_last_error(sleeps):
    transport, seen = scripted(BUSY, BUSY, BUSY)
    client = TunegraphClient("http://tg", transport=transport, retries=2, backoff_s=0.1)
    with pytest.raises(APIError) as caught:
        client.models()
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        503, "models_unavailable", "busy"
    )  # fmt: skip
    assert len(seen) == 3 and sleeps == [0.1, 0.2]


def test_connection_errors_are_retried_then_reported(sleeps):
    refused = httpx.ConnectError("connection refused")
    transport, seen = scripted(refused, MODELS)
    assert TunegraphClient("http://tg", transport=transport).models() == ["rag"]
    assert len(seen) == 2

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(APIError) as caught:
        TunegraphClient(f"http://127.0.0.1:{port}", retries=1).models()
    assert caught.value.status is None and caught.value.type == "connection_error"
    assert f"cannot reach http://127.0.0.1:{port}" in caught.value.message


def test_a_job_submission_is_not_repeated_after_a_500_or_a_lost_answer(sleeps):
    broken = (500, {}, {"error": {"message": "internal error", "code": "internal_error"}})
    transport, seen = scripted(broken)
    with pytest.raises(APIError, match="internal error"):
        TunegraphClient("http://tg", transport=transport).submit_job("count")
    assert len(seen) == 1
    transport, seen = scripted(httpx.ReadError("connection reset"))
    with pytest.raises(APIError, match="connection reset"):
        TunegraphClient("http://tg", transport=transport).submit_job("count")
    assert len(seen) == 1
    # a 503 means the server took nothing: that one is retried
    queued = (202, {}, {"id": "job_1", "state": "queued"})
    transport, seen = scripted(BUSY, queued)
    assert TunegraphClient("http://tg", transport=transport).submit_job("count")["id"] == "job_1"


def test_a_non_json_error_body_still_becomes_an_api_error(sleeps):
    transport = httpx.MockTransport(lambda request: httpx.Response(404, text="<html>nope"))
    with pytest.raises(APIError) as caught:
        TunegraphClient("http://tg", transport=transport).models()
    assert caught.value.status == 404 and "<html>nope" in caught.value.message


def test_upload_sends_files_for_jobs_and_lists_them(api, tmp_path):
    from click.testing import CliRunner

    from api.cli.main import main

    folder = tmp_path / "manual"
    folder.mkdir()
    (folder / "brakes.md").write_text("# Brakes\n\nCaliper bolt torque: 31 Nm\n")
    (folder / "doors.md").write_text("# Doors\n\nHinge bolt torque: 24 Nm\n")
    stored = api.upload([folder], folder="manuals")
    assert [(f["path"], f["bytes"]) for f in stored] == [
        ("manuals/brakes.md", 37), ("manuals/doors.md", 34),
    ]  # fmt: skip
    assert [f["path"] for f in api.files()] == ["manuals/brakes.md", "manuals/doors.md"]
    result = CliRunner().invoke(
        main, ["client", "upload", str(folder / "doors.md"), "--url", api.base_url]
    )
    assert result.exit_code == 0 and "doors.md  (34 bytes)" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["client", "upload", str(empty), "--url", api.base_url])
    assert result.exit_code == 1 and "no file to upload" in result.output
