"""The API over real HTTP: `tunegraph client` commands and the official openai SDK against a
live server on the fake models, a client that drops a stream, and `tunegraph serve` itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
from click.testing import CliRunner

from agents.backends.base import Event, Usage
from api.cli.main import main
from tests.agents.conftest import PHOTOS
from tests.agents.fakes import FakeVision, ScriptedBackend, fake_llm
from tests.api.conftest import jpeg, report
from tests.api.test_app_assessments import VISION_ANSWER

QUESTION = "What is the hood hinge bolt torque?"


def cli(live, *args):
    """``tunegraph client ARGS --url LIVE``."""
    return CliRunner().invoke(main, ["client", *args, "--url", live])


# ---- tunegraph client ------------------------------------------------------------------------


def test_client_chat_prints_the_answer_plain_and_streamed(live, context):
    context.llm = fake_llm("It is 24 Nm.", "It is 24 Nm.")
    result = cli(live, "chat", QUESTION, "--model", "rag")
    assert result.exit_code == 0, result.output
    assert result.output == "It is 24 Nm.\n"
    result = cli(live, "chat", QUESTION, "--model", "rag", "--stream", "--max-tokens", "7")
    assert result.exit_code == 0 and result.output == "It is 24 Nm.\n"
    assert context.llm.backend.requests[-1].max_tokens == 7


def test_client_errors_print_the_servers_message_and_exit_1(live, context):
    result = cli(live, "chat", QUESTION, "--model", "gpt-4")
    assert result.exit_code == 1
    assert "the model 'gpt-4' does not exist" in result.output and "HTTP 404" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    result = cli(live, "chat", QUESTION, "--model", "assessment-both")
    assert result.exit_code == 1 and "POST /v1/assessments" in result.output


def test_client_assess_both_prints_the_side_by_side_table(live, context, tmp_path):
    context.llm = fake_llm(report())
    context.vision = FakeVision([json.dumps(VISION_ANSWER)])
    (tmp_path / "a.png").write_bytes(PHOTOS["p/own.png"])
    (tmp_path / "b.jpg").write_bytes(jpeg(3))
    claim = tmp_path / "claim.json"
    claim.write_text(json.dumps({"policy_id": "POL-9", "claimed_amount": 900}))
    result = cli(
        live, "assess", str(tmp_path / "a.png"), str(tmp_path / "b.jpg"),
        "--approach", "both", "--claim", str(claim),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = [cell.strip() for cell in lines[0].split("|")]
    assert header == ["field", "finetuned", "agentic", "agree?"]
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in lines}
    assert rows["damages"][0] == "hood dent (moderate)" and rows["damages"][2] == "yes"
    assert rows["overall severity"] == ["moderate", "moderate", "yes"]
    assert rows["cost range"][0] == "700-900 USD" and rows["cost range"][2] == "overlap"
    assert rows["repair actions"][0] == "hood repair"
    # a.png is a photo of claim C-1 (policy POL-1): on policy POL-9 the agentic fraud check
    # flags it as reused; the fine-tuned VLM cannot know
    assert rows["fraud level"] == ["low (risk 0.00)", "high (risk 0.60)", "no"]
    assert rows["time (ms)"][2] == ""
    assert "agreement: 5 of 6 checked fields agree" in result.output


def test_client_assess_json_and_a_refused_upload(live, context, tmp_path):
    context.llm = fake_llm(report())
    (tmp_path / "hood.jpg").write_bytes(jpeg())
    result = cli(live, "assess", str(tmp_path / "hood.jpg"), "--approach", "agentic", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["assessments"]["agentic"]["approach"] == "agentic"
    (tmp_path / "notes.txt").write_text("not a photo")
    result = cli(live, "assess", str(tmp_path / "notes.txt"))
    assert result.exit_code == 1 and "notes.txt: not a JPEG" in result.output


def test_client_jobs_submit_wait_list_show_cancel(live, release):
    result = cli(live, "jobs", "submit", "count", "--param", "n=2", "--wait")
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[0]
    assert "count" in result.output and "succeeded" in result.output and "100%" in result.output
    shown = json.loads(cli(live, "jobs", "show", job_id).output)
    assert shown["result"] == {"counted": 2} and shown["params"] == {"n": 2}

    result = cli(live, "jobs", "submit", "release", "--json")
    running = json.loads(result.output)["id"]
    assert release.started.wait(5)
    result = cli(live, "jobs", "cancel", running, "--wait")
    assert result.exit_code == 0 and "cancelled" in result.output
    listed = cli(live, "jobs", "list").output.splitlines()
    assert [line.split()[0] for line in listed] == [running, job_id]

    result = cli(live, "jobs", "submit", "broken", "--wait")
    assert result.exit_code == 1 and "failed: OSError: disk full" in result.output
    result = cli(live, "jobs", "show", "job_missing")
    assert result.exit_code == 1 and "no job 'job_missing'" in result.output
    result = cli(live, "jobs", "submit", "count", "--param", "oops")
    assert result.exit_code == 2 and "use KEY=VALUE" in result.output


def test_client_uses_the_api_key_from_settings(make_app, monkeypatch):
    from tests.api.conftest import serving

    with serving(make_app(api_keys=("k-one",))) as url:
        monkeypatch.setenv("TUNEGRAPH_API_KEYS", "k-one,k-two")
        result = cli(url, "jobs", "list")
        assert result.exit_code == 0 and result.output == "no jobs\n"
        result = CliRunner().invoke(
            main, ["client", "jobs", "list", "--url", url, "--api-key", "wrong"]
        )
        assert result.exit_code == 1 and "invalid API key (HTTP 401" in result.output


# ---- the openai SDK --------------------------------------------------------------------------


@pytest.fixture
def openai_client(live):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{live}/v1", api_key="unused", max_retries=0)


def test_openai_sdk_lists_models_and_chats(openai_client, context):
    ids = [model.id for model in openai_client.models.list()]
    assert ids[:5] == ["base", "rag", "finetuned", "finetuned-rag", "agent"]
    assert "assessment-both" in ids

    context.llm = fake_llm("It is 24 Nm.")
    completion = openai_client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": QUESTION}], max_tokens=32
    )
    assert completion.choices[0].message.content == "It is 24 Nm."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 14


def test_openai_sdk_streams_with_usage(openai_client, context):
    context.llm = fake_llm("It is 24 Nm.")
    stream = openai_client.chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is 24 Nm."
    assert chunks[-1].usage.completion_tokens == 4


def test_openai_sdk_raises_its_typed_errors(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": QUESTION}]
        )
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="POST /v1/assessments"):
        openai_client.chat.completions.create(
            model="assessment-agentic", messages=[{"role": "user", "content": QUESTION}]
        )


# ---- a client that goes away mid-stream ------------------------------------------------------


@dataclass
class EndlessBackend(ScriptedBackend):
    """Streams a word every ``delay_s`` for a long time; says when its stream was closed."""

    delay_s: float = 0.05
    generated: int = 0
    closed: bool = False

    def stream(self, request):
        try:
            for i in range(400):
                time.sleep(self.delay_s)
                self.generated += 1
                yield Event(text=f" w{i}")
            yield Event(finish_reason="stop", usage=Usage(1, 400))
        finally:
            self.closed = True


def test_a_client_that_disconnects_mid_stream_leaves_the_server_healthy(live, context):
    from agents.chat_model import LocalChatModel

    backend = EndlessBackend()
    context.llm = LocalChatModel(backend=backend)
    body = {"model": "base", "messages": [{"role": "user", "content": "Talk."}], "stream": True}
    with httpx.Client(base_url=live, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            first = next(response.iter_text())
            assert first.startswith("data: ")
        # Closed after one chunk: the server's next write fails, it closes the event stream and
        # the model stops at its next word, long before the 10 s request timeout.
        deadline = time.monotonic() + 5
        while not backend.closed:
            assert time.monotonic() < deadline, f"still generating ({backend.generated} words)"
            time.sleep(0.05)
        assert backend.generated < 100

        context.llm = fake_llm("Still here.")
        answer = http.post(
            "/v1/chat/completions",
            json={"model": "base", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "Still here."
        assert http.get("/healthz").json() == {"status": "ok"}


# ---- tunegraph serve -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tunegraph_serve_answers_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = {**os.environ, "TUNEGRAPH_HOME": str(tmp_path / "home"), "TUNEGRAPH_PORT": str(port)}
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "serve", "--threads", "16"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered /healthz"
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        assert "X-Request-ID" in health.headers  # the tunegraph app, not a placeholder
        jobs = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=5)
        assert jobs.json() == {"object": "list", "data": []}
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert "Booting worker" in output and "Shutting down" in output
    assert "Traceback" not in output


def test_serve_caps_malloc_arenas_on_glibc():
    """`tunegraph serve` caps glibc's per-thread malloc arenas (a threaded server otherwise
    grows by arenas); elsewhere it says it could not."""
    import platform

    from api.server.gunicorn import limit_malloc_arenas

    assert limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
