"""Tool-use examples: the right first step per question, the conversation as serving renders it,
multi-step cases when a lookup misses, balance by tool, and ``data.source=tools`` /
``data.tool_share`` end to end through sft_dataset (never from the held-out split)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from finetune.datasets import DatasetError
from finetune.manual_data import manual_questions, wording
from finetune.text_data import DataArgs, data_files, sft_dataset
from finetune.tool_data import (
    CALL_OPEN,
    NO_TOOL_QUESTIONS,
    ToolQuestion,
    conversation_examples,
    tool_examples,
    tool_questions,
    tools_prompt,
    trained_for_tools,
)
from tests.finetune.test_manual_data import _blocks, _words


def _runner(blocks, calls=None, miss=()):
    """Stand-in tools over ``blocks``: shared words rank them, the lookups filter by kind, as
    agents.tools does; codes in ``miss`` are not found. Records each call."""

    def search(query, kind=None, k=3):
        words = set(re.findall(r"\w+", query.lower()))
        pool = [b for b in blocks if kind is None or b.kind == kind]
        ranked = sorted(pool, key=lambda b: -len(words & set(re.findall(r"\w+", b.text.lower()))))
        return ranked[:k]

    def run(name, arguments):
        if calls is not None:
            calls.append((name, dict(arguments)))
        if name == "lookup_fault_code":
            code = arguments["code"]
            found = [] if code in miss else [b for b in blocks if code in b.text]
            if not found:
                return f"No troubleshooting entry mentions {code!r}."
        elif name == "lookup_spec":
            found = search(arguments["query"], "SPEC")
        elif name == "search_manual":
            found = search(arguments["query"])
        else:
            raise ValueError(f"no tool named {name!r}")
        return "\n---\n".join(f"[{b.id}] {b.text}" for b in found)

    return run


def test_each_question_gets_its_right_first_step(tmp_path):
    _, blocks = _blocks(tmp_path)
    train, _, test = manual_questions(blocks, phrasings=2, seed=3)
    asked = tool_questions(train)
    first = Counter((q.kind, q.tool) for q in asked)
    assert set(first) == {
        ("SPEC", "lookup_spec"),
        ("TROUBLESHOOTING", "lookup_fault_code"),
        ("PROCEDURE", "search_manual"),
        ("EXPLANATION", "search_manual"),
        ("WIRING", "search_manual"),
        ("OTHER", "none"),
    }
    code = next(q for q in asked if q.tool == "lookup_fault_code")
    assert code.arguments == {"code": "P2463"}
    spec = next(q for q in asked if q.tool == "lookup_spec")
    assert spec.arguments == {"query": spec.question} and spec.answer.endswith(("Nm", "L"))
    assert [q for q in asked if q.tool == "none"] == [
        ToolQuestion(question, "none", {}, answer, "OTHER")
        for question, answer in NO_TOOL_QUESTIONS["train"]
    ]
    # no-tool questions of the test split are worded like none of the training split
    held_out = {wording(q) for q, _ in NO_TOOL_QUESTIONS["test"] + NO_TOOL_QUESTIONS["val"]}
    assert not held_out & {wording(q) for q, _ in NO_TOOL_QUESTIONS["train"]}
    assert ToolQuestion.from_dict(json.loads(json.dumps(code.to_dict()))) == code
    assert len(tool_questions(test, "test")) == len(test) + len(NO_TOOL_QUESTIONS["test"])


def test_a_conversation_is_written_as_serving_writes_it(tmp_path):
    _, blocks = _blocks(tmp_path)
    spec = next(b for b in blocks if "28 Nm" in b.text)
    question = ToolQuestion(
        "What is the injector clamp bolt torque?",
        "lookup_spec",
        {"query": "What is the injector clamp bolt torque?"},
        "28 Nm",
        "SPEC",
        spec.id,
    )
    examples, steps = conversation_examples(question, _runner(blocks))
    assert steps == 1 and len(examples) == 2
    call, answer = examples
    assert call.messages[0] == {"role": "system", "content": tools_prompt()}
    assert call.messages[1] == {"role": "user", "content": question.question}
    # the model's own call is compact JSON, as the grammar lets it write
    assert call.messages[-1]["content"] == (
        '<tool_call>{"name":"lookup_spec","arguments":'
        '{"query":"What is the injector clamp bolt torque?"}}</tool_call>'
    )
    # the answer follows the call as serving writes it back, and the tool's real result
    assert answer.messages[2]["content"].startswith('<tool_call>{"name": "lookup_spec", ')
    result = answer.messages[3]
    assert result["role"] == "user" and result["content"].startswith("<tool_response>\n[")
    assert f"[{spec.id}] Injector clamp bolt: 28 Nm" in result["content"]
    assert answer.messages[-1] == {"role": "assistant", "content": "28 Nm"}
    assert {e.kind for e in examples} == {"TOOL:lookup_spec"}


def test_a_lookup_that_misses_is_followed_by_a_search(tmp_path):
    _, blocks = _blocks(tmp_path)
    code = next(b for b in blocks if b.kind == "TROUBLESHOOTING")
    question = ToolQuestion(
        "What could cause P2463?", "lookup_fault_code", {"code": "P2463"}, code.text, "x", code.id
    )
    calls = []
    examples, steps = conversation_examples(question, _runner(blocks, calls, miss={"P2463"}))
    assert steps == 2 and len(examples) == 3
    assert calls == [
        ("lookup_fault_code", {"code": "P2463"}),
        ("search_manual", {"query": "What could cause P2463?"}),
    ]
    assert "No troubleshooting entry" in examples[1].messages[3]["content"]
    assert examples[1].messages[-1]["content"].startswith(f'{CALL_OPEN}{{"name":"search_manual"')
    assert examples[2].messages[-1]["content"] == code.text
    # a question whose block no lookup finds gives no examples (its answer would be ungrounded)
    lost = ToolQuestion("Glow plugs?", "search_manual", {"query": "zzz"}, "x", "PROCEDURE", "nope")
    assert conversation_examples(lost, _runner(blocks)) == ([], 1)
    # a question that needs no tool is answered at once
    hello = ToolQuestion("Hi", "none", {}, "Hello!", "OTHER")
    (direct,), steps = conversation_examples(hello, _runner(blocks, calls))
    assert steps == 0 and direct.messages[-1]["content"] == "Hello!" and len(calls) == 2


def test_examples_are_balanced_by_tool(tmp_path):
    _, blocks = _blocks(tmp_path)
    train, _, _ = manual_questions(blocks, phrasings=3, seed=3)
    made = tool_examples(tool_questions(train), _runner(blocks), seed=3)
    counts = made.questions_per_tool
    assert set(counts) == {"search_manual", "lookup_spec", "lookup_fault_code", "none"}
    assert len(set(counts.values())) == 1, counts  # every tool as often as the commonest
    card = made.card()
    assert card["examples"] == len(made.examples) > 0
    with pytest.raises(DatasetError, match=r"data\.tool_share"):
        tool_examples([], _runner(blocks), share=1.5)
    some = tool_examples(tool_questions(train), _runner(blocks), share=0.3, seed=3)
    assert 0 < len(some.examples) < len(made.examples)


def _assemble(tmp_path, **fields):
    path, _ = _blocks(tmp_path)
    data = DataArgs(manual=path, **fields)
    return sft_dataset(
        data,
        count_tokens=_words,
        demo_dir=tmp_path / "no-demo",
        max_length=2000,
        seed=2,
        tool_index=lambda given: _runner(given),
    )


def test_a_tool_adapter_of_its_own_trains_on_training_questions_only(tmp_path):
    report = _assemble(tmp_path, source="tools")
    assert report.train and report.val
    assert all(e.kind.startswith("TOOL:") for e in report.train + report.val)
    assert all(e.messages[0]["content"] == tools_prompt() for e in report.train)
    held_out = {wording(q.question) for q in report.test}
    trained = {wording(e.messages[1]["content"]) for e in report.train}
    assert held_out and not held_out & trained
    card = report.card
    assert card["source"] == "tools" and card["tools"]["share"] == 1.0
    assert card["tools"]["examples"] > 0 and card["tools"]["multi_step"] >= 0
    # the adapter keeps the card that says it was trained for tools
    adapter = tmp_path / "adapter"
    for name, text in data_files(report).items():
        (adapter / name).parent.mkdir(parents=True, exist_ok=True)
        (adapter / name).write_text(text)
    assert trained_for_tools(adapter) and not trained_for_tools(tmp_path / "other")


def test_the_service_adapter_can_learn_tools_beside_its_answers(tmp_path):
    plain = _assemble(tmp_path, source="manual")
    mixed = _assemble(tmp_path, source="manual", tool_share=0.5)
    tool_made = [e for e in mixed.train if e.kind.startswith("TOOL:")]
    assert tool_made and not any(e.kind.startswith("TOOL:") for e in plain.train)
    assert len(mixed.train) == len(plain.train) + len(tool_made)
    assert mixed.card["tools"]["share"] == 0.5 and "tools" not in plain.card
    assert [q.question for q in mixed.test] == [q.question for q in plain.test]
    with pytest.raises(DatasetError, match=r"data\.tool_share needs the service-chat tools"):
        sft_dataset(
            DataArgs(manual=_blocks(tmp_path)[0], source="manual", tool_share=0.5),
            count_tokens=_words,
            demo_dir=tmp_path,
            max_length=2000,
            seed=2,
        )


def test_demo_tool_questions_in_more_wordings_keep_the_held_out_split_out(demo_corpus):
    def assemble(**fields):
        return sft_dataset(
            DataArgs(source="tools", tool_share=0.2, **fields),
            count_tokens=_words,
            demo_dir=demo_corpus.root,
            max_length=4000,
            seed=2,
            tool_index=lambda given: _runner(given),
        )

    def first_questions(report):
        return {e.messages[1]["content"] for e in report.train if len(e.messages) == 3}

    plain, more = assemble(), assemble(template_phrasings=2, vehicle="Halden Vireo 1.6T")
    assert more.card["phrasing"].endswith("and templates (2 training wordings per fact)")
    assert more.card["vehicle"] == "Halden Vireo 1.6T"
    # the vehicle is named in questions of every tool, not only in spec ones
    naming_it = Counter(
        e.kind for e in more.train if len(e.messages) == 3 and "Vireo" in e.messages[1]["content"]
    )
    assert {"TOOL:search_manual", "TOOL:lookup_spec", "TOOL:lookup_fault_code"} <= set(naming_it)
    assert len(first_questions(more)) > 2 * len(first_questions(plain))
    # every wording the demo holds out stays out, the generic templates' own included
    held_out = {wording(q.question) for q in more.test}
    assert held_out and not held_out & {wording(q) for q in first_questions(more)}
    assert more.card["tools"]["questions_per_tool"].keys() == {
        "lookup_fault_code",
        "lookup_spec",
        "none",
        "search_manual",
    }


@pytest.mark.parametrize(
    "fields",
    [{"template_phrasings": -1}, {"template_phrasings": 2, "source": "demo"}],
)
def test_template_phrasings_outside_demo_tools_is_refused(tmp_path, fields):
    with pytest.raises(DatasetError, match=r"data\.template_phrasings"):
        sft_dataset(
            DataArgs(**{"source": "tools", **fields}),
            count_tokens=_words,
            demo_dir=tmp_path,
            max_length=2000,
            seed=2,
            tool_index=lambda given: _runner(given),
        )
