"""`tunegraph eval judge`: the rule judge on a JSONL and on a compare report, an endpoint judge
on a fake OpenAI-compatible server and on a live tunegraph server, and bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from click.testing import CliRunner

from api.cli.main import main
from finetune.datasets import refusal

RECORDS = [
    {
        "question": "Torque?",
        "reference": "25 N·m",
        "answer": "25 Nm",
        "kind": "SPEC",
        "mode": "rag",
    },
    {
        "question": "Torque?",
        "reference": "25 Nm",
        "answer": "30 Nm",
        "kind": "SPEC",
        "mode": "base",
    },
    {"question": "Torque?", "reference": "25 Nm", "answer": None, "kind": "SPEC", "mode": "base"},
    {
        "question": "Gasket?",
        "reference": "Do not reuse the gasket.",
        "answer": "Reuse the gasket.",
        "kind": "PROCEDURE",
        "mode": "rag",
    },
    {
        "question": "P0999?",
        "gold": refusal("P0999"),
        "answer": refusal("P0999"),
        "kind": "TROUBLESHOOTING",
        "mode": "base",
    },
]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TUNEGRAPH_JUDGE_API_KEY", raising=False)
    return tmp_path / "home"


@pytest.fixture
def answers(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def run(*args):
    return CliRunner().invoke(main, ["eval", "judge", *map(str, args)])


def test_the_rule_judge_prints_rates_per_mode_and_kind(home, answers):
    result = run(answers)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "judge: rule judge (offline)"
    header = lines[1].split()
    assert header[:4] == ["n", "valid", "correct", "incorrect"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    # base: 30 Nm contradicts, the refusal to an uncovered question is right, one failed call
    assert rows["base"][:2] == ["3", "2"]
    assert dict(zip(header[2:], rows["base"][2:], strict=False))["correct"] == "0.500"
    assert rows["rag"][:3] == ["2", "2", "0.500"]
    assert "rag PROCEDURE" in result.output and "base TROUBLESHOOTING" in result.output
    assert "agreement with exact match on SPEC: 1.000 (3 of 3 answers); trusted" in result.output


def test_json_has_the_seeds_rates_and_every_label(home, answers):
    result = run(answers, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["judge"] == "rule judge (offline)"
    base = data["per_mode"]["base"]
    assert base["total_responses"] == 3 and base["valid_responses"] == 2
    assert base["contradiction_rate"] == 0.5 and base["correct_rate"] == 0.5
    assert base["invalid_format_rate"] == round(1 / 3, 4)
    assert data["per_kind"]["rag"]["PROCEDURE"]["contradiction_rate"] == 1.0
    assert [i["label"] for i in data["items"]] == [
        "correct",
        "contradiction",
        "invalid_format",
        "contradiction",
        "correct",
    ]
    assert data["agreement_with_exact_match"]["trusted"] is True


def test_a_compare_report_is_judged_with_its_questions(home, tmp_path):
    qa = tmp_path / "test.jsonl"
    qa.write_text(
        json.dumps(
            {
                "id": "q1",
                "block_id": "b1",
                "kind": "SPEC",
                "split": "test",
                "question": "Hinge bolt torque?",
                "answer": "24 Nm",
            }
        )
        + "\n"
    )
    report = tmp_path / "report.json"
    chat = {
        "base": [{"item": "q1", "output": "It is 20 Nm.", "error": None}],
        "agent": [{"item": "q1", "output": "Tighten to 24 N·m.", "error": None}],
    }
    report.write_text(json.dumps({"questions": 1, "items": {"assessment": {}, "chat": chat}}))
    result = run(report, "--questions", qa, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["per_mode"]["agent"]["correct_rate"] == 1.0
    assert data["per_mode"]["base"]["contradiction_rate"] == 1.0
    # without --questions, the demo's test questions are the default; there are none here
    result = run(report)
    assert result.exit_code == 1 and "pass --questions" in result.output


def test_bad_input_is_one_clear_line(home, tmp_path, answers):
    result = run(tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    result = run(bad)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {bad}, line 2: malformed JSON: Expecting property name enclosed in double quotes"
    )
    result = run(answers, "--judge-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2 and "--judge-url and --judge-model go together" in result.output
    result = run(answers, "--judge-url", "localhost:8000", "--judge-model", "m")
    assert result.exit_code == 2 and "give the server's URL up to /v1" in result.output
    result = run(answers, "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m")
    assert result.exit_code == 1 and "cannot reach the inference server" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


# ---- an endpoint judge ----------------------------------------------------------------------


class FakeJudge(BaseHTTPRequestHandler):
    """Chat completions, streamed as the OpenAI API streams them: a JSON verdict for the
    answers it knows, prose for the others. Records each request's key and prompt."""

    seen: ClassVar[list[tuple[str | None, str]]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        FakeJudge.seen.append((self.headers.get("Authorization"), prompt))
        if "Answer to grade: 25 Nm" in prompt:
            reply = '{"label": "correct", "reason": "same torque", "confidence": 5}'
        elif "Answer to grade: 30 Nm" in prompt:
            reply = '```json\n{"label": "contradiction", "reason": "30 is not 25", "confidence": 4}\n```'
        else:
            reply = "I would say this answer is mostly right."
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": reply[i : i + 7]}}]}
            for i in range(0, len(reply), 7)
        ]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 9}})
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_judge() -> Iterator[str]:
    FakeJudge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        thread.join(5)


def test_a_fake_endpoint_judges_and_unparsed_answers_are_counted_apart(
    home, answers, fake_judge, monkeypatch
):
    monkeypatch.setenv("TUNEGRAPH_JUDGE_API_KEY", "judge-secret")
    result = run(answers, "--judge-url", fake_judge, "--judge-model", "judge-7b", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["judge"] == f"judge-7b at {fake_judge}"
    # asked once per answer that has a form; the failed call is invalid format without a call
    assert len(FakeJudge.seen) == 4
    assert all(key == "Bearer judge-secret" for key, _ in FakeJudge.seen)
    assert "Reference answer: Do not reuse the gasket." in FakeJudge.seen[2][1]
    items = data["items"]
    assert [i["label"] for i in items] == ["correct", "contradiction", "invalid_format", None, None]
    assert items[3]["raw"] == "I would say this answer is mostly right."
    rag, base = data["per_mode"]["rag"], data["per_mode"]["base"]
    assert (rag["valid_responses"], rag["unjudged"], rag["unjudged_rate"]) == (1, 1, 0.5)
    assert base["valid_responses"] == 1 and base["contradiction_rate"] == 1.0
    assert base["average_confidence"] == 4.0 and base["confidence_completeness"] == 1.0
    assert data["agreement_with_exact_match"]["rate"] == 1.0
    result = run(answers, "--judge-url", fake_judge, "--judge-model", "judge-7b")
    assert result.exit_code == 0 and f"judge: judge-7b at {fake_judge}" in result.output
    assert "rag " in result.output and "unjudged" in result.output


def test_a_live_tunegraph_server_acts_as_the_judge(home, answers, live, context):
    """The judge is the live server's ``base`` model (the fake model here): each answer gets a
    label or counts as unjudged, and the report names the endpoint's model."""
    from tests.agents.fakes import fake_llm

    replies = [
        '{"label": "correct", "reason": "the same value", "confidence": 5}',
        "contradiction, because 30 is not 25",
        '{"label": "neutral", "reason": "no answer"}',
        '{"label": "correct", "reason": "says the manual lacks it"}',
    ]
    context.llm = fake_llm(*replies)
    result = run(answers, "--judge-url", f"{live}/v1", "--judge-model", "base", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["judge"] == f"base at {live}/v1"
    labels = [i["label"] for i in data["items"]]
    assert labels == ["correct", None, "invalid_format", "neutral", "correct"]
    assert all(i["label"] is not None or i["raw"] for i in data["items"])
    requests = context.llm.backend.requests
    assert len(requests) == 4 and "Answer to grade: 30 Nm" in str(requests[1].messages)
    totals = data["per_mode"]
    assert sum(m["total_responses"] for m in totals.values()) == len(RECORDS)
    assert sum(m["valid_responses"] + m["unjudged"] for m in totals.values()) == 4


def test_a_live_server_that_refuses_the_model_is_one_clear_line(home, answers, live):
    result = run(answers, "--judge-url", f"{live}/v1", "--judge-model", "gpt-4")
    assert result.exit_code == 1
    assert "the judge gpt-4 at" in result.output and "answered 404" in result.output
    assert "Traceback" not in result.output
