"""`tunegraph eval text`'s retrieval variants search and refuse as chat's ``rag`` modes do
(``service_chat.rag_retrieval``, what the command answers with), and the evaluations' default
questions."""

from __future__ import annotations

from click.testing import CliRunner
from langchain_core.messages import HumanMessage

from agents.context import AgentContext
from agents.graphs import service_chat
from api import composition
from api.cli.eval import default_questions, demo_questions
from api.cli.main import main
from api.settings import Settings
from rag.stores.base import Hit
from tests.agents.fakes import FakeRetriever, fake_llm

BLOCKS = [Hit("spec-1", "Wheel nut torque: 110 Nm.", 0.9, {"kind": "SPEC"})]


class PrefixBlind(FakeRetriever):
    """Sees a question as bearing on the blocks only without its task prefix."""

    def support(self, query, texts):
        super().support(query, texts)
        return 0.0 if query.startswith("[") else 0.9


def test_eval_and_chat_gate_a_prefixed_question_alike():
    question = "[SPEC] What is the wheel nut torque?"
    manuals = PrefixBlind(BLOCKS)
    search, supported = service_chat.rag_retrieval(manuals, 0.5)
    passages = search(question)
    assert passages == [BLOCKS[0].text]
    evaluated = supported(question, passages)

    context = AgentContext(llm=fake_llm("110 Nm"), manuals=manuals, min_support=0.5)
    state = service_chat.graph.invoke(
        {"messages": [HumanMessage(question)], "mode": "rag"}, context=context
    )
    assert evaluated is True and state["unsupported"] is False
    assert state["messages"][-1].content == "110 Nm"
    # the same search and the same gate question, the task prefix taken off
    assert manuals.queries[0] == manuals.queries[1] == (question, 3, None)
    assert manuals.supports == [("What is the wheel nut torque?", passages)] * 2


def test_eval_text_answers_with_the_chat_search_and_gate(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path))
    monkeypatch.setenv("TUNEGRAPH_MIN_SUPPORT", "0.5")
    monkeypatch.setattr("api.cli.eval.manual_retriever", lambda namespace: PrefixBlind(BLOCKS))
    monkeypatch.setattr(composition, "text_answerer", lambda *args: None)
    given = {}

    def evaluate_text(store, adapter, **options):
        question = "[SPEC] What is the wheel nut torque?"
        passages = options["search"](question)
        given["gate"] = options["supported"](question, passages)
        return {}

    monkeypatch.setattr("finetune.evaluation.evaluate_text", evaluate_text)
    files = tmp_path / "qa.jsonl", tmp_path / "blocks.jsonl"
    for file in files:
        file.write_text("{}\n")
    args = ["eval", "text", "--questions", str(files[0]), "--blocks", str(files[1]), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert given == {"gate": True}  # the task prefix taken off, as chat does
    _, supported = service_chat.rag_retrieval(PrefixBlind(BLOCKS), None)
    assert supported is None  # no threshold, no gate


def test_default_questions_are_the_adapters_kept_split_else_the_demos(tmp_path):
    settings = Settings(home=tmp_path)
    demo = demo_questions(settings)
    assert default_questions(settings, "manual-lora") == demo
    kept = settings.adapters_dir / "manual-lora" / "data" / "test.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}\n")
    assert default_questions(settings, "manual-lora") == kept
    assert default_questions(settings, "other") == demo
