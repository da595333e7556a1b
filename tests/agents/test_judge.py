"""Judge rates: the rule judge's labels, the strict parse of an endpoint judge's answer, the
seed's rates, the agreement with SPEC exact match, and reading answers (JSONL, compare report)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agents.backends.base import GenerationError
from agents.compare.records import Outcome
from agents.judge import (
    RULE_JUDGE_NAME,
    EndpointJudge,
    JudgeError,
    JudgeInputError,
    Judgement,
    JudgeRecord,
    Rates,
    RuleJudge,
    agreement_with_exact_match,
    judge_rates,
    load_records,
    parse_judgement,
    read_records,
)
from finetune.datasets import refusal
from ingest.records import QAPair
from tests.agents.fakes import ScriptedBackend

JUDGE = RuleJudge()
PROCEDURE = (
    "1. Remove the intake manifold.\n2. Remove the 3 mounting bolts (8 mm) and take out the "
    "cylinder head.\n3. Do not reuse the gasket.\n4. Install the cylinder head and tighten the "
    "mounting bolts to 32 Nm."
)
WIRING = "Pin 2 of connector EM-C3 (camshaft position sensor) is signal, black wire."


def label(answer, reference="25 Nm", kind="SPEC", **extra):
    return JUDGE.judge(JudgeRecord("What is the torque?", reference, answer, kind, **extra))


# ---- the rule judge, label by label ----------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("Tighten the bolts to 25 Nm.", "25 N·m"),  # the unit written two ways
        ("25 N·m", "25 Nm"),
        ("It is 25Nm", "25 Nm"),
        ("Use 2 new bolts and tighten them to 25 Nm.", "25 Nm"),  # a count before the value
        ("2200 ohm between pins 1 and 2", "2.2 kohm"),  # the same value in another unit
        ("4 L with the filter", "4.0 L"),
        ("Tighten to 25 newton metres.", "25 Nm"),  # a unit spelled out
    ],
)
def test_a_spec_answer_with_the_reference_value_and_unit_is_correct(answer, reference):
    judgement = label(answer, reference)
    assert judgement.label == "correct", judgement
    assert judgement.reason.startswith("states the reference value")


def test_a_spec_answer_with_another_number_for_the_quantity_is_a_contradiction():
    judgement = label("The torque is 30 N·m.")
    assert judgement == Judgement("contradiction", "states 30 nm where the reference states 25 nm")
    assert label("Tighten to 30 Nm, or 25 Nm for new bolts.").label == "contradiction"
    assert label("about 1.25 ohms", "10.7 ohm").reason == (
        "states 1.25 ohm where the reference states 10.7 ohm"
    )


def test_a_spec_answer_without_the_quantity_is_incorrect():
    assert label("Tighten them to 25.").reason == "states 25 without its unit nm"
    assert label("25 mm").reason == "states no value in nm"
    assert label("Tighten the bolts firmly.").label == "incorrect"


def test_text_answers_are_judged_by_the_references_key_terms():
    paraphrase = (
        "Take off the intake manifold, undo the 3 mounting bolts (8 mm) and lift out the "
        "cylinder head; fit a new gasket, install the head and tighten the bolts to 32 Nm."
    )
    judgement = label(paraphrase, PROCEDURE, "PROCEDURE")
    assert judgement.label == "correct" and judgement.reason.endswith(
        "of the reference's key terms"
    )
    assert label("Remove the manifold.", PROCEDURE, "PROCEDURE").label == "incorrect"
    assert RuleJudge(min_key_terms=0.95).judge(
        JudgeRecord("q", PROCEDURE, paraphrase, "PROCEDURE")
    ).label == "incorrect"  # fmt: skip


def test_a_number_that_differs_in_the_same_unit_contradicts_a_text_answer():
    judgement = label("Remove the 3 bolts (10 mm) and tighten to 32 Nm.", PROCEDURE, "PROCEDURE")
    assert judgement == Judgement("contradiction", "states 10 mm where the reference states 8 mm")
    # a value in a unit the reference does not use is not a contradiction
    assert label(PROCEDURE + " Battery: 12 V.", PROCEDURE, "PROCEDURE").label == "correct"


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("Reuse the gasket.", "Do not reuse the gasket."),
        ("You can reuse the gasket.", "Never reuse the gasket."),
        ("Don't disconnect the battery.", "Disconnect the battery."),
        ("The battery doesn't need disconnecting.", "The battery needs disconnecting first."),
    ],
)
def test_an_answer_that_flips_a_negation_is_a_contradiction(answer, reference):
    judgement = label(answer, reference, "PROCEDURE")
    assert judgement.label == "contradiction", judgement
    assert judgement.reason.startswith("negation differs from the reference")


def test_same_negation_in_other_words_is_not_a_contradiction():
    assert label("Never reuse the gasket.", "Do not reuse the gasket.", "PROCEDURE").label == (
        "correct"
    )


def test_another_wire_colour_or_connector_of_the_same_shape_is_a_contradiction():
    assert label(WIRING, WIRING, "WIRING").label == "correct"
    colour = label("Pin 2 of connector EM-C3 is the signal, red wire.", WIRING, "WIRING")
    assert colour == Judgement(
        "contradiction", "names the colour 'red' where the reference names 'black'"
    )
    other = label(
        "Pin 2 of EM-C4 (camshaft position sensor): signal, black wire.", WIRING, "WIRING"
    )
    assert other.reason == "names 'em-c4' where the reference names 'em-c3'"
    code = label("P3703 means the camshaft position sensor circuit is low.", "P3702: camshaft "
                 "position sensor circuit low.", "TROUBLESHOOTING")  # fmt: skip
    assert code.label == "contradiction"


def test_a_text_answer_that_leaves_out_a_colour_or_identifier_is_incorrect():
    vague = "Terminal 2 of connector EM-C3 on the camshaft position sensor carries a signal wire."
    assert label(vague, WIRING, "WIRING") == Judgement(
        "incorrect", "does not name 'black', as the reference does"
    )
    no_code = "The camshaft position sensor circuit is low: check the wiring and connector."
    code = label(no_code, "P3702: camshaft position sensor circuit low.", "TROUBLESHOOTING")
    assert code.reason == "does not name 'p3702', as the reference does"


def test_the_refusal_is_neutral_on_covered_questions_and_correct_on_the_others():
    said = refusal("the torque")
    assert label(said).label == "neutral"
    assert label("I don't know.").label == "neutral"
    uncovered = refusal("fault code P0999")
    assert label(said, uncovered, "TROUBLESHOOTING").label == "correct"
    assert label("P0999 is a misfire.", uncovered, "TROUBLESHOOTING").label == "incorrect"
    assert label("I'm not sure.", uncovered, "TROUBLESHOOTING").label == "neutral"
    # a record can say so itself, whatever its reference
    assert label(said, "25 Nm", answerable=False).label == "correct"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "the call failed: no answer"),
        ("", "empty answer"),
        ("  \n ", "empty answer"),
        ("... ?!", "no letter or digit"),
        ("<|im_start|>assistant 25 Nm", "chat-template tokens in the answer"),
    ],
)
def test_no_answer_to_judge_is_invalid_format(answer, reason):
    assert label(answer) == Judgement("invalid_format", reason)


# ---- an endpoint judge's answer ---------------------------------------------------------------


def test_a_judge_answer_is_parsed_strictly():
    assert parse_judgement('{"label": "correct", "reason": "same value"}') == Judgement(
        "correct", "same value"
    )
    fenced = '```json\n{"label": "Contradiction", "reason": "30 vs 25", "confidence": 5}\n```'
    assert parse_judgement(fenced) == Judgement("contradiction", "30 vs 25", 5)
    assert parse_judgement('{"label": "invalid format", "reason": "", "confidence": 9}') == (
        Judgement("invalid_format", "", None)  # a confidence out of 1-5 is dropped
    )
    for bad in (
        "correct",
        "Label: correct. The value matches.",
        'Sure! {"label": "correct", "reason": "x"}',
        '{"label": "partly correct", "reason": "x"}',
        '{"label": "correct"}',
        '["correct"]',
        "",
    ):
        judgement = parse_judgement(bad)
        assert judgement.label is None and judgement.raw == bad, bad


def test_an_endpoint_judge_asks_once_per_answer_and_never_guesses_a_label():
    backend = ScriptedBackend(
        ['{"label": "correct", "reason": "same value", "confidence": 4}', "It looks right to me."],
        name="judge-model",
    )
    judge = EndpointJudge(backend, max_tokens=64, where="http://judge/v1")
    assert judge.name == "judge-model at http://judge/v1"
    records = [
        JudgeRecord("Torque?", "25 Nm", "25 Nm", "SPEC", "rag", "q1"),
        JudgeRecord("Torque?", "25 Nm", "twenty-five", "SPEC", "rag", "q2"),
        JudgeRecord("Torque?", "25 Nm", None, "SPEC", "rag", "q3"),  # no call for it
    ]
    report = judge_rates(records, judge)
    assert [j.label for j in report.judgements] == ["correct", None, "invalid_format"]
    assert len(backend.requests) == 2 and backend.requests[0].max_tokens == 64
    prompt = backend.requests[1].messages[0]["content"]
    assert "Question (SPEC): Torque?" in prompt and "Answer to grade: twenty-five" in prompt
    rates = report.per_mode["rag"]
    assert (rates.valid_responses, rates.unjudged, rates.correct_rate) == (1, 1, 1.0)
    assert rates.average_confidence == 4.0 and rates.confidence_completeness == 1.0


def test_an_endpoint_judge_that_fails_raises_a_judge_error():
    backend = ScriptedBackend([GenerationError("cannot reach http://judge/v1")], name="m")
    with pytest.raises(JudgeError, match="the judge m failed: cannot reach http://judge/v1"):
        EndpointJudge(backend).judge(JudgeRecord("q", "25 Nm", "25 Nm", "SPEC"))


# ---- rates and agreement ------------------------------------------------------------------------


def test_rates_follow_the_seeds_table():
    judgements = [Judgement("correct", "")] * 5 + [Judgement("incorrect", "")] * 3
    judgements += [Judgement("neutral", ""), Judgement("contradiction", "")]
    judgements += [Judgement("invalid_format", "")] * 2 + [Judgement(None, "unparsed")]
    rates = Rates.of(judgements)
    assert (rates.total_responses, rates.valid_responses, rates.unjudged) == (13, 10, 1)
    assert (rates.correct_rate, rates.incorrect_rate) == (0.5, 0.3)
    assert (rates.neutral_rate, rates.contradiction_rate) == (0.1, 0.1)
    assert rates.invalid_format_rate == round(2 / 13, 4)  # of all answers, as the seed's
    assert rates.unjudged_rate == round(1 / 13, 4)
    assert rates.average_confidence is None and rates.confidence_completeness == 0.0
    empty = Rates.of([Judgement("invalid_format", "")])
    assert empty.valid_responses == 0 and empty.correct_rate is None


def test_judge_rates_per_mode_and_kind_and_agreement_with_exact_match():
    records = [
        JudgeRecord("q", "25 Nm", "25 Nm", "SPEC", "rag", "s1"),
        JudgeRecord("q", "25 Nm", "Fit 2 bolts at 25 Nm.", "SPEC", "rag", "s2"),
        JudgeRecord("q", "25 Nm", "30 Nm", "SPEC", "base", "s1"),
        JudgeRecord("q", "25 Nm", None, "SPEC", "base", "s2"),
        JudgeRecord("q", WIRING, WIRING, "WIRING", "base", "w1"),
        JudgeRecord("q", refusal("P0999"), refusal("P0999"), "SPEC", "base", "u1"),
    ]
    report = judge_rates(records, JUDGE)
    assert report.judge == RULE_JUDGE_NAME
    assert list(report.per_mode) == ["rag", "base"]
    assert report.per_mode["rag"].correct_rate == 1.0
    base = report.per_mode["base"]
    assert (base.total_responses, base.valid_responses) == (4, 3)
    assert base.contradiction_rate == round(1 / 3, 4) and base.invalid_format_rate == 0.25
    assert report.per_kind["base"]["WIRING"].correct_rate == 1.0
    assert set(report.per_kind["base"]) == {"SPEC", "WIRING"}
    agreement = report.agreement  # SPEC answers to covered questions only: s1, s2 twice
    assert (agreement.n, agreement.agree, agreement.judge_only) == (4, 3, ("rag/s2",))
    assert agreement.rate == 0.75 and agreement.trusted is False
    data = json.loads(json.dumps(report.to_dict()))
    assert data["agreement_with_exact_match"]["trusted"] is False
    assert data["items"][2] == {
        "mode": "base",
        "id": "s1",
        "kind": "SPEC",
        "label": "contradiction",
        "reason": "states 30 nm where the reference states 25 nm",
        "confidence": None,
        "raw": None,
    }


def test_a_judge_that_always_says_correct_disagrees_with_exact_match():
    class Yes:
        name = "yes-man"

        def judge(self, record):
            return Judgement("correct", "looks fine")

    records = [JudgeRecord("q", "25 Nm", a, "SPEC", id=a) for a in ("25 Nm", "30 Nm", "40 Nm")]
    agreement = agreement_with_exact_match(records, [Yes().judge(r) for r in records])
    assert agreement.rate == round(1 / 3, 4) and agreement.trusted is False
    assert agreement.judge_only == ("answers/30 Nm", "answers/40 Nm")
    nothing = agreement_with_exact_match([], [])
    assert nothing.rate is None and nothing.trusted is None


# ---- reading the answers ------------------------------------------------------------------------


def test_records_from_jsonl_with_defaults(tmp_path):
    path = tmp_path / "answers.jsonl"
    lines = [
        {"question": "q", "reference": "25 Nm", "answer": "25 Nm", "kind": "SPEC", "mode": "rag"},
        {"question": "q", "gold": "25 Nm", "answer": None, "id": "x"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    first, second = read_records(path)
    assert first == JudgeRecord("q", "25 Nm", "25 Nm", "SPEC", "rag", "line 1")
    assert (second.reference, second.answer, second.kind, second.mode, second.id) == (
        "25 Nm", None, "OTHER", "answers", "x",
    )  # fmt: skip


def test_every_bad_line_is_named_with_its_number(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(
        '{"question": "q", "reference": "r", "answer": "a"}\n'
        '{"question": "q", "answer": "a"}\n'
        "{oops\n"
        '{"question": "q", "reference": "r", "answer": 3}\n'
        "[1]\n"
    )
    with pytest.raises(JudgeInputError) as error:
        read_records(path)
    message = str(error.value)
    assert f"{path}, line 2: bad or missing reference" in message
    assert f"{path}, line 3: malformed JSON" in message
    assert f"{path}, line 4: answer must be a string or null" in message
    assert f"{path}, line 5: not a JSON object" in message
    assert "line 1" not in message
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(JudgeInputError, match="no records"):
        read_records(tmp_path / "empty.jsonl")
    with pytest.raises(JudgeInputError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")


def compare_report(tmp_path, with_questions):
    """A compare report's JSON as ``Comparison.to_dict`` writes it (``items.chat[mode]`` rows:
    the question's id, its outcome, and, ``with_questions``, the question and its reference),
    and the questions file it asked."""
    questions = [
        QAPair("q-spec", "b1", "SPEC", "test", "Torque of the hinge bolts?", "24 Nm"),
        QAPair("q-none", "", "SPEC", "test", "Torque of the moon?", refusal("the moon"), False),
    ]
    chats = {
        "base": [Outcome("It is 30 Nm."), Outcome(None, error="RuntimeError: boom")],
        "agent": [Outcome("Tighten to 24 N·m."), Outcome(refusal("the moon"))],
    }
    asked = [
        {"item": q.id, "kind": q.kind, "question": q.question, "reference": q.answer}
        if with_questions
        else {"item": q.id}
        for q in questions
    ]
    items = {
        mode: [{**a, **dataclasses.asdict(o)} for a, o in zip(asked, rows, strict=True)]
        for mode, rows in chats.items()
    }
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"questions": 2, "items": {"assessment": {}, "chat": items}}))
    qa = tmp_path / "test.jsonl"
    qa.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in questions))
    return report, qa


@pytest.mark.parametrize("with_questions", [True, False])
def test_records_from_a_compare_report(tmp_path, with_questions):
    report, qa = compare_report(tmp_path, with_questions)
    records = load_records(report, None if with_questions else qa)
    assert [(r.mode, r.id, r.kind, r.answer) for r in records] == [
        ("base", "q-spec", "SPEC", "It is 30 Nm."),
        ("base", "q-none", "SPEC", None),
        ("agent", "q-spec", "SPEC", "Tighten to 24 N·m."),
        ("agent", "q-none", "SPEC", refusal("the moon")),
    ]
    assert records[0].reference == "24 Nm" and records[1].covered is False
    result = judge_rates(records, JUDGE)
    assert [j.label for j in result.judgements] == [
        "contradiction",
        "invalid_format",
        "correct",
        "correct",
    ]


def test_a_report_without_its_questions_needs_the_questions_file(tmp_path):
    report, _ = compare_report(tmp_path, with_questions=False)
    with pytest.raises(JudgeInputError, match="q-none, q-spec of the report are not in"):
        load_records(report, None)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(QAPair("q-x", "", "SPEC", "test", "?", "1 Nm").to_dict()) + "\n")
    with pytest.raises(JudgeInputError, match="pass --questions"):
        load_records(report, other)
    (tmp_path / "bad.jsonl").write_text('{"id": "q-x"}\n')
    with pytest.raises(JudgeInputError, match=r"bad\.jsonl, line 1: not a question"):
        load_records(report, tmp_path / "bad.jsonl")
