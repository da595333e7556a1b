"""``eval tools``: routers scored on held-out questions with scripted models, and the check that
tool-use training examples show the model what serving shows it."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from agents.backends.base import GenerationError
from agents.backends.chat_format import render_messages
from agents.context import AgentContext
from agents.graphs import service_chat
from agents.prompts import AGENT_PROMPT
from agents.tool_eval import (
    UNPARSED,
    evaluate_tools,
    held_out_questions,
    markdown,
    router_contexts,
)
from agents.tools import manual_tools, tool_runner
from finetune.datasets import DatasetError
from finetune.tool_data import (
    AGENT_PROMPT as TRAINED_PROMPT,
)
from finetune.tool_data import (
    NO_TOOL_QUESTIONS,
    TOOL_FUNCTIONS,
    ToolQuestion,
    conversation_examples,
)
from ingest.records import QAPair
from rag.stores.base import Hit
from tests.agents.fakes import FakeRetriever, fake_llm

BLOCKS = [
    Hit("spec-1", "Wheel nut torque: 110 Nm", 0.9, {"kind": "SPEC"}),
    Hit("ts-1", "P0117 - Coolant sensor circuit low", 0.8, {"kind": "TROUBLESHOOTING"}),
]
SPEC = ToolQuestion(
    "What is the wheel nut torque?",
    "lookup_spec",
    {"query": "What is the wheel nut torque?"},
    "110 Nm",
    "SPEC",
    "spec-1",
)
CODE = ToolQuestion(
    "What does P0117 mean?",
    "lookup_fault_code",
    {"code": "P0117"},
    "P0117 - Coolant sensor circuit low",
    "TROUBLESHOOTING",
    "ts-1",
)
HELLO = ToolQuestion("Hello, good evening.", "none", {}, "Hello! Ask me about the manual.", "OTHER")


def test_training_examples_show_the_model_what_serving_shows_it():
    assert TRAINED_PROMPT == AGENT_PROMPT
    served = [convert_to_openai_tool(t)["function"] for t in manual_tools(None)]
    assert list(TOOL_FUNCTIONS) == served
    # the graph's requests, rendered for SmolLM2's template, are the training prompts
    manuals = FakeRetriever(BLOCKS)
    ctx = AgentContext(
        llm=fake_llm([("lookup_spec", SPEC.arguments)], "110 Nm"),
        finetuned_adapter="ft",
        manuals=manuals,
        tool_adapter=True,
    )
    service_chat.graph.invoke(
        {"messages": [HumanMessage(SPEC.question)], "mode": "agent"}, context=ctx
    )
    examples, steps = conversation_examples(SPEC, tool_runner(manuals))
    assert steps == 1
    for request, example in zip(ctx.llm.backend.requests, examples, strict=True):
        rendered, _ = render_messages(request, template_knows_tools=False)
        assert rendered == list(example.messages[:-1])
    # what the model is trained to write parses as the call it stands for
    from agents.backends.chat_format import parse_tool_calls

    (call,) = parse_tool_calls(examples[0].messages[-1]["content"])
    assert (call.name, call.arguments) == ("lookup_spec", SPEC.arguments)


def test_the_tool_runner_runs_the_served_tools_by_name():
    run = tool_runner(FakeRetriever(BLOCKS))
    assert (
        run("lookup_fault_code", {"code": "P9999"}) == "No troubleshooting entry mentions 'P9999'."
    )
    assert run("lookup_spec", {"query": "wheel nut torque"}).startswith("[")
    with pytest.raises(ValueError, match="no tool named 'guess'; use one of search_manual, "):
        run("guess", {})


def test_each_router_is_scored_on_its_first_step_and_its_answer():
    llm = fake_llm(
        # base model, made to call a tool first: the wrong one for the spec and the greeting
        [("search_manual", {"query": "wheel nut"})],
        "110 Nm",
        [("lookup_fault_code", {"code": "P0117"})],
        "Coolant sensor circuit low",
        [("search_manual", {"query": "Hello"})],
        "Hello!",
        # the rule router picks the tools; the model only answers
        "It is 110 Nm.",
        "P0117 - Coolant sensor circuit low",
        "Hello.",
        # the fine-tuned router: right tools, right arguments, no tool for the greeting
        [("lookup_spec", {"query": "what is the wheel nut torque"})],
        "110 Nm",
        [("lookup_fault_code", {"code": "P0117"})],
        "P0117 - Coolant sensor circuit low",
        "Hello! Ask me about the manual.",
    )
    routers = router_contexts(llm, FakeRetriever(BLOCKS), "ft", tool_adapter=True)
    assert list(routers) == ["base", "rules", "finetuned"]
    results = evaluate_tools([SPEC, CODE, HELLO], routers)
    assert not llm.backend.replies  # every scripted reply was asked for
    base, rules, tuned = results["base"], results["rules"], results["finetuned"]
    assert (base.tool_accuracy, rules.tool_accuracy, tuned.tool_accuracy) == (0.3333, 0.6667, 1.0)
    assert base.confusion == {
        "lookup_fault_code": {"lookup_fault_code": 1},
        "lookup_spec": {"search_manual": 1},
        "none": {"search_manual": 1},
    }
    assert rules.confusion["none"] == {"search_manual": 1}
    assert [(w["question"], w["right"], w["chosen"]) for w in base.wrong] == [
        (SPEC.question, "lookup_spec", "search_manual"),
        (HELLO.question, "none", "search_manual"),
    ]
    assert not tuned.wrong
    assert tuned.argument_match == 1.0 and tuned.steps_per_question == pytest.approx(2 / 3, 1e-3)
    assert base.steps_per_question == 1.0
    assert (base.spec_exact_match, rules.spec_exact_match, tuned.spec_exact_match) == (1, 1, 1)
    assert tuned.rouge_l == 1.0 and base.rouge_l < 1.0
    assert {s.parse_rate for s in results.values()} == {1.0}
    table = markdown(results)
    assert "| finetuned | 3 | 1.000 | 1.000 |" in table
    assert "| none | 0 | 0 | 1 |" in table  # the tuned router's greeting row: no tool


def test_a_call_that_does_not_parse_counts_against_the_router():
    llm = fake_llm(GenerationError("the model wrote a malformed tool call '{'"), "Hello!")
    routers = {"model": AgentContext(llm=llm, manuals=FakeRetriever(BLOCKS), router="model")}
    (result,) = evaluate_tools([SPEC], routers).values()
    assert result.parse_rate == 0.0 and result.tool_accuracy == 0.0
    assert result.confusion == {"lookup_spec": {UNPARSED: 1}}
    # any other generation failure is not a parse failure: it is raised
    broken = fake_llm(GenerationError("out of memory"))
    with pytest.raises(GenerationError, match="out of memory"):
        evaluate_tools([SPEC], {"m": AgentContext(llm=broken, manuals=FakeRetriever(BLOCKS))})


def test_held_out_questions_come_from_the_test_split_only(tmp_path):
    path = tmp_path / "test.jsonl"
    pairs = [
        QAPair("q1", "spec-1", "SPEC", "test", "Wheel nut torque?", "110 Nm"),
        QAPair("q2", "", "SPEC", "test", "Tyre torque?", "The manual...", answerable=False),
    ]
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    found = held_out_questions(path)
    assert [q.tool for q in found] == ["lookup_spec"] + ["none"] * len(NO_TOOL_QUESTIONS["test"])
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({**pairs[0].to_dict(), "split": "train"}) + "\n")
    with pytest.raises(DatasetError, match="give the test split"):
        held_out_questions(train)
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(DatasetError, match="not a QA JSONL file"):
        held_out_questions(tmp_path / "bad.jsonl")
