"""`tunegraph eval tools`: the three routers on an adapter's held-out questions with a scripted
model, the report files, and bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from api import composition
from api.cli.main import main
from finetune.tool_data import NO_TOOL_QUESTIONS
from ingest.records import QAPair
from rag.stores.base import Hit
from tests.agents.fakes import FakeRetriever, ScriptedBackend

BLOCKS = [Hit("spec-1", "Wheel nut torque: 110 Nm", 0.9, {"kind": "SPEC"})]
QUESTION = QAPair("q1", "spec-1", "SPEC", "test", "What is the wheel nut torque?", "110 Nm")
GREETINGS = len(NO_TOOL_QUESTIONS["test"])


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home with a tool-trained adapter that kept one test question; the model is scripted
    and the tools search a fake index."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNEGRAPH_HOME", str(home))
    adapter = home / "adapters" / "tool-lora"
    (adapter / "data").mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "data" / "card.json").write_text(json.dumps({"tools": {"examples": 40}}))
    (adapter / "data" / "test.jsonl").write_text(json.dumps(QUESTION.to_dict()) + "\n")
    backend = ScriptedBackend(adapter_names=("tool-lora",))
    monkeypatch.setattr(composition, "local_backend", lambda *args: backend)
    monkeypatch.setattr("api.cli.eval.manual_retriever", lambda namespace: FakeRetriever(BLOCKS))
    return home, backend


def _run(*args):
    return CliRunner().invoke(main, ["eval", "tools", *args])


def test_the_fine_tuned_router_is_scored_beside_the_rules(home):
    home, backend = home
    # the rules: lookup_spec for the spec question, search_manual for each greeting; the tuned
    # model: the right lookup, then no tool for the greetings
    backend.replies += ["110 Nm"] + ["Hello."] * GREETINGS
    backend.replies += [[("lookup_spec", {"query": QUESTION.question})], "110 Nm"]
    backend.replies += ["Hello!"] * GREETINGS
    result = _run("--adapter", "tool-lora", "--router", "rules", "--router", "finetuned", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == ["rules", "finetuned"]
    n = 1 + GREETINGS
    assert data["rules"]["tool_accuracy"] == round(1 / n, 4)
    assert data["rules"]["confusion"]["none"] == {"search_manual": GREETINGS}
    assert data["finetuned"]["tool_accuracy"] == 1.0
    assert data["finetuned"]["spec_exact_match"] == 1.0 and data["finetuned"]["parse_rate"] == 1.0
    report = home / "runs" / "eval-tools"
    assert json.loads((report / "report.json").read_text()) == data
    assert "| finetuned |" in (report / "report.md").read_text()
    # the fine-tuned router was offered the tools with the adapter, free to answer at once
    tuned = [r for r in backend.requests if r.tools]
    assert tuned and {(r.adapter, r.tool_choice) for r in tuned[:1]} == {("tool-lora", "auto")}


def test_bad_input_names_the_option(home, tmp_path):
    result = _run("--adapter", "missing", "--router", "finetuned")
    assert result.exit_code == 2 and "--router" in result.output
    assert "no trained adapter 'missing'" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    result = _run("--adapter", "tool-lora", "--questions", str(bad))
    assert result.exit_code == 1 and "not a QA JSONL file" in result.output


def test_limit_samples_every_right_tool(home):
    _, backend = home
    backend.replies += ["110 Nm", "Hello."]
    result = _run(
        "--adapter", "tool-lora", "--router", "rules", "--limit", "2", "--max-new-tokens", "7",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rules = json.loads(result.output)["rules"]
    assert rules["n"] == 2
    assert rules["confusion"] == {"lookup_spec": {"lookup_spec": 1}, "none": {"search_manual": 1}}
    assert {r.max_tokens for r in backend.requests} == {7}
    result = _run("--adapter", "tool-lora", "--router", "rules", "--limit", "2", "--seed", "x")
    assert result.exit_code == 2 and "--seed" in result.output
