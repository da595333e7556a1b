"""The comparison over the whole test split: sizes (``all``, stratified questions), calls in
flight at once, confusion matrices, fraud detection on held-out claims, and verdict wording."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import threading
import time
from dataclasses import dataclass

import pytest

from agents.compare import run as run_module
from agents.compare.claims import held_out_claim_ids, held_out_claims, without_claims
from agents.compare.inputs import held_out_questions, stratified
from agents.compare.records import ClaimCase, CompareError, Outcome, PhotoCase, parse_size
from agents.compare.report import write_report
from agents.compare.run import ComputeClock, run_comparison
from agents.compare.scoring import (
    damage_pairs,
    precision_recall,
    roc_auc,
    score_assessments,
    score_fraud,
)
from agents.compare.verdicts import verdict_text
from agents.graphs import assess_finetuned
from finetune.bootstrap import Verdict, verdict
from ingest.claims import read_claims
from ingest.demo.corpus import DemoCorpusConfig, generate_demo_corpus
from ingest.records import QAPair
from rag.claims_db import ClaimsDatabase
from tests.agents.test_compare import OracleBackend, compare, context, photos

KINDS = ("EXPLANATION", "PROCEDURE", "SPEC", "TROUBLESHOOTING", "WIRING")


def write_questions(path, counts: dict[str, int]) -> list[QAPair]:
    items = [
        QAPair(f"{kind}-{i:03d}", f"b-{kind}-{i}", kind, "test", f"{kind} question {i}?", "42 Nm")
        for kind, n in counts.items()
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(dataclasses.asdict(q)) + "\n" for q in items))
    return items


def test_questions_are_stratified_by_kind_and_all_takes_the_whole_split(tmp_path):
    path = tmp_path / "test.jsonl"
    items = write_questions(path, {"SPEC": 50, "PROCEDURE": 30, "WIRING": 3, "EXPLANATION": 20})
    picked = held_out_questions(tmp_path, 40, seed=1, path=path)
    counts = {k: sum(q.kind == k for q in picked) for k in ("SPEC", "PROCEDURE", "EXPLANATION")}
    # WIRING has 3: the other kinds share its remaining 7 (37 over three kinds)
    assert sum(q.kind == "WIRING" for q in picked) == 3
    assert sorted(counts.values()) == [12, 12, 13] and len(picked) == 40
    assert len({q.id for q in picked}) == 40 and [q.id for q in picked] == sorted(
        q.id for q in picked
    )
    assert held_out_questions(tmp_path, 40, seed=1, path=path) == picked  # seeded
    assert held_out_questions(tmp_path, 40, seed=2, path=path) != picked
    assert held_out_questions(tmp_path, "all", path=path) == items
    assert held_out_questions(tmp_path, 10_000, path=path) == items
    # equal shares whenever every kind has enough
    even = stratified(items, 12, seed=0)
    assert sorted(sum(q.kind == k for q in even) for k in ("SPEC", "PROCEDURE", "WIRING")) == [
        3,
        3,
        3,
    ]


def test_sizes_parse_all_and_refuse_anything_else():
    from agents.compare import CompareOptions

    assert parse_size("all") == "all" and parse_size(" All ") == "all" and parse_size("7") == 7
    assert CompareOptions(images="all", questions="all", claims="all").images == "all"
    with pytest.raises(CompareError) as error:
        CompareOptions(images="lots", questions=-1, claims=True, concurrency=0)
    message = str(error.value)
    assert "images: use a whole number >= 0 or 'all', not 'lots'" in message
    assert "questions cannot be negative: use a whole number >= 0 or 'all', not -1" in message
    assert "claims: use a whole number >= 0 or 'all', not True" in message
    assert "concurrency: use a whole number >= 1" in message


@dataclass
class InFlight:
    """Counts the calls running at once (each sleeps a little so that they overlap)."""

    now: int = 0
    most: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.01)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def test_concurrent_calls_give_the_same_answers_in_the_same_order_as_one_at_a_time():
    flight = InFlight()

    def answer(question, adapter, prompt):
        with flight:  # an answer that depends on the question, the adapter and the prompt
            return f"{question} | {adapter} | {len(prompt)}"

    questions = [
        QAPair(f"q{i}", "spec-1", KINDS[i % 5], "test", f"Question number {i}?", "110 Nm")
        for i in range(12)
    ]
    cases = photos(8)
    one = compare(context(answer), cases=cases, questions=questions, concurrency=1)
    assert flight.most == 1
    four = compare(context(answer), cases=cases, questions=questions, concurrency=4)
    assert flight.most > 1  # the calls did overlap

    def answers(result):
        chats = {m: [o.output for o in rows] for m, rows in result.chats.items()}
        assessed = {
            a: [{k: v for k, v in o.output.items() if k != "timings_ms"} for o in rows]
            for a, rows in result.assessments.items()
        }
        return chats, assessed

    assert answers(four) == answers(one)
    assert four.chats["base"][5].output.startswith("Question number 5?")
    assert four.concurrency == 4 and set(four.wall_s) == {"assessment", "chat"}
    records = four.chat_records()  # what a judge reads: mode, kind, question, reference, answer
    assert len(records) == 5 * 12 and records[13].mode == "rag"
    assert (records[13].kind, records[13].question) == (KINDS[1], "Question number 1?")
    assert records[13].reference == "110 Nm" and records[13].answer == four.chats["rag"][1].output
    for task in ("assessment", "chat"):
        assert four.to_dict()["wall_s"][task].keys() == one.wall_s[task].keys()


def test_progress_comes_in_item_order_and_a_stop_cancels_concurrent_runs():
    seen = []
    compare(context(), cases=photos(4), concurrency=3, progress=lambda f, m: seen.append(m))
    assert seen[:4] == [f"finetuned: photo p{i}.png" for i in range(4)]
    assert len(seen) == 2 * 4 + 5 * 3
    calls = itertools.count()
    with pytest.raises(Exception, match="stopped after"):
        compare(context(), cases=photos(8), concurrency=4, should_stop=lambda: next(calls) > 5)


def test_the_compute_clock_shares_overlapping_calls_time(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: now[0])
    clock = ComputeClock()
    now[0] = 1.0
    a = clock.start()  # a alone for 2 s, with b for 4 s, b alone for 1 s
    now[0] = 3.0
    b = clock.start()
    now[0] = 7.0
    a_share = clock.stop(a)
    now[0] = 8.0
    b_share = clock.stop(b)
    assert (a_share, b_share) == (4.0, 3.0)
    assert a_share + b_share == 8.0 - 1.0  # the machine's busy time, not 6 + 5 s of calls
    now[0] = 20.0
    c = clock.start()  # idle time before a call is nobody's
    now[0] = 21.5
    assert clock.stop(c) == 1.5


def test_a_hosted_text_models_calls_take_no_share_of_this_machine(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: now[0])
    hosted = run_module._Meters(None, hosted=True)
    assert hosted.text_clock is not hosted.clock
    vision = hosted.clock.start()
    remote = hosted.text_clock.start()  # a call to the server, in flight at the same time
    now[0] = 4.0
    assert hosted.clock.stop(vision) == 4.0  # the vision model had the machine to itself
    assert hosted.text_clock.stop(remote) == 4.0
    local = run_module._Meters(None, hosted=False)
    assert local.text_clock is local.clock


def damage(kind, part, severity="minor"):
    return {"type": kind, "part": part, "severity": severity}


def test_damage_type_and_severity_confusion_matrices_on_a_hand_made_case():
    cases = [
        PhotoCase("a", b"", (damage("dent", "hood", "minor"), damage("crack", "trunk", "severe"))),
        PhotoCase("b", b"", (damage("scratch", "roof", "moderate"),)),
        PhotoCase("c", b"", (damage("dent", "front_door", "severe"),)),
    ]
    said = [
        # the dent right, its severity wrong; the crack called a scratch on the same part
        {"damages": [damage("dent", "hood", "moderate"), damage("scratch", "trunk")]},
        # right, and a spurious lamp
        {"damages": [damage("scratch", "roof", "moderate"), damage("lamp_broken", "headlamp")]},
        None,  # a failed call: the dent was missed
    ]
    rows = [
        Outcome({**o, "overall_severity": "minor", "cost_estimate": {"min": 0, "max": 0}})
        if o
        else Outcome(None, error="boom")
        for o in said
    ]
    types, severities = damage_pairs(cases, rows)
    assert sorted(types) == sorted(
        [
            ("dent", "dent"),
            ("crack", "scratch"),
            ("scratch", "scratch"),
            ("none", "lamp_broken"),
            ("dent", "none"),
        ]
    )
    assert sorted(severities) == [("minor", "moderate"), ("moderate", "moderate")]
    scores = score_assessments(cases, rows)
    labels = scores["type_confusion"]["labels"]
    matrix = scores["type_confusion"]["matrix"]

    def cell(true, predicted):
        return matrix[labels.index(true)][labels.index(predicted)]

    assert labels[-1] == "none" and sum(map(sum, matrix)) == 5
    assert cell("dent", "dent") == 1 and cell("dent", "none") == 1
    assert cell("crack", "scratch") == 1 and cell("none", "lamp_broken") == 1
    severity = scores["severity_confusion"]
    assert severity["labels"] == ["minor", "moderate", "severe"]
    assert severity["matrix"] == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert scores["severity_per_class"] == {"minor": 0.0, "moderate": 1.0}


def brute_force_auc(scores, labels):
    pairs = [
        (p, n)
        for p, lp in zip(scores, labels, strict=True)
        if lp
        for n, ln in zip(scores, labels, strict=True)
        if not ln
    ]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_roc_auc_matches_a_pairwise_count_ties_included():
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randint(2, 40)
        labels = [rng.random() < 0.3 for _ in range(n)]
        if all(labels) or not any(labels):
            assert roc_auc([rng.random() for _ in labels], labels) is None
            continue
        scores = [rng.choice([0.0, 0.35, 0.5, 0.6, 0.9]) for _ in range(n)]  # many ties
        assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))
    assert roc_auc([0.2, 0.2, 0.2], [True, False, False]) == 0.5  # a constant: no signal
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.8, 0.9], [True, True, False]) == 0.0


def fraud_outcome(risk, level):
    return Outcome({"risk": risk, "level": level, "signals": []})


def test_fraud_scores_at_the_approaches_levels_and_a_riskless_approach_is_no_signal():
    claims = [
        ClaimCase("c1", (), {}, True, "early_claim"),
        ClaimCase("c2", (), {}, True, "reused_photos"),
        ClaimCase("c3", (), {}, False),
        ClaimCase("c4", (), {}, False),
        ClaimCase("c5", (), {}, False),
    ]
    rows = [
        fraud_outcome(0.7, "high"),
        fraud_outcome(0.1, "low"),
        fraud_outcome(0.35, "medium"),
        fraud_outcome(0.0, "low"),
        Outcome(None, error="boom"),  # a failed call flags nothing
    ]
    scores = score_fraud(claims, rows)
    assert scores["n"] == 5 and scores["fraud"] == 2 and not scores["constant_risk"]
    assert scores["roc_auc"] == pytest.approx(
        brute_force_auc([0.7, 0.1, 0.35, 0.0, 0.0], [c.fraud for c in claims]), abs=1e-4
    )
    assert scores["at"]["medium"] == {
        "flagged": 2,
        "precision": 0.5,
        "recall": 0.5,
        "false_alarm_rate": 0.3333,
    }
    assert scores["at"]["high"] == {
        "flagged": 1,
        "precision": 1.0,
        "recall": 0.5,
        "false_alarm_rate": 0.0,
    }
    assert scores["recall_by_pattern"] == {"early_claim": 1.0, "reused_photos": 0.0}
    assert scores["failed"] == 1
    riskless = score_fraud(claims, [fraud_outcome(0.0, "low")] * 5)
    assert riskless["constant_risk"] and riskless["roc_auc"] == 0.5
    assert riskless["at"]["medium"]["precision"] is None  # nothing flagged
    assert precision_recall([False], [False])["recall"] is None


def test_verdicts_whose_interval_includes_0_read_no_significant_difference(tmp_path):
    noisy = {"a": [1, 0] * 10, "b": [0, 1] * 9 + [0, 0]}
    v = verdict(
        "acc",
        ["a", "b"],
        20,
        lambda a, idx: sum(noisy[a][i] for i in idx) / len(idx),
        higher_is_better=True,
    )
    assert v.tie and v.ci_low <= 0 <= v.ci_high and v.margin > 0
    assert verdict_text(v) == "no significant difference (a ahead of b, the 95 % CI includes 0)"
    same = Verdict("x", True, {"a": 1.0, "b": 1.0}, "a", "b", True, 0.0, 0.0, 0.0)
    assert verdict_text(same) == "no significant difference (a = b)"
    won = Verdict("x", True, {"a": 1.0, "b": 0.0}, "a", "b", False, 1.0, 1.0, 1.0)
    assert verdict_text(won) == "a wins over b"
    result = compare(context(), cases=photos(2))
    write_report(result, tmp_path, "t")
    markdown = (tmp_path / "report.md").read_text()
    assert "| no significant difference (base = rag) |" in markdown and "tie" not in markdown
    texts = [v["text"] for v in result.to_dict()["verdicts"]["chat"]]
    assert "no significant difference (base = rag)" in texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims") / "demo"
    generate_demo_corpus(
        root, DemoCorpusConfig(seed=5, n_claims=120, n_images=24, n_scanned_pages=0)
    )
    return root


def test_test_claims_are_the_latest_tenth_and_the_tools_history_lacks_them(corpus, tmp_path):
    claims = read_claims(corpus / "claims" / "claims.csv").claims
    ids = held_out_claim_ids(corpus)
    assert len(ids) == 12
    latest = sorted(claims, key=lambda c: (c.incident_date, c.claim_id))
    assert set(ids) == {c.claim_id for c in latest[-12:]}
    cases = held_out_claims(corpus, "all")
    assert [c.id for c in cases] == sorted(ids) and all(c.images for c in cases)
    by_id = {c.claim_id: c for c in claims}
    first = cases[0]
    assert first.claim["vin"] == by_id[first.id].vin and first.fraud == bool(by_id[first.id].fraud)
    assert all(c.pattern for c in cases if c.fraud) and not any(
        c.pattern for c in cases if not c.fraud
    )
    sample = held_out_claims(corpus, 5, seed=3)
    assert len(sample) == 5 and {c.id for c in sample} <= set(ids)
    assert held_out_claims(corpus, 5, seed=3) == sample and held_out_claims(corpus, 0) == []

    database = ClaimsDatabase(f"sqlite:///{tmp_path / 'all.sqlite'}")
    database.upsert(claims)
    history = without_claims(database, ids, tmp_path / "copy")
    assert history.count() == len(claims) - 12
    assert history.get(ids) == [] and len(history.get([c.claim_id for c in latest[:3]])) == 3
    assert database.count() == len(claims)  # the served database is left as it was
    with pytest.raises(CompareError, match="cannot copy"):
        without_claims(object(), ids, tmp_path / "other")
    # a database of another corpus: the test claims are not there to hide, and it says so
    other = ClaimsDatabase(f"sqlite:///{tmp_path / 'other.sqlite'}")
    other.upsert(latest[:-12])
    with pytest.raises(CompareError, match="holds 0 of the corpus's 12 test claims"):
        without_claims(other, ids, tmp_path / "copy2")


class Riskless:
    """A vision-language model whose answer carries no fraud field (as today's)."""

    name = "riskless-vlm@1"
    calls = 0

    def assess(self, images, claim, feedback=None):
        self.calls += 1
        return json.dumps(
            {"damages": [], "overall_severity": "minor", "cost_estimate": {"min": 0, "max": 0}}
        )


def fraud_run(ctx, cases):
    return run_comparison(
        ctx, [], [], known_numbers=set(), claims=cases, concurrency=3, resamples=200
    )


def test_fraud_runs_stop_before_the_report_and_a_riskless_model_has_no_signal(corpus, tmp_path):
    cases = held_out_claims(corpus, "all")
    backend = OracleBackend(lambda q, adapter, prompt: "x")
    ctx, vision = context(), Riskless()
    ctx = dataclasses.replace(
        ctx, vision=vision, llm=ctx.llm.model_copy(update={"backend": backend})
    )
    result = fraud_run(ctx, cases)
    assert backend.requests == 0  # no agentic report was written for a fraud run
    # the fine-tuned graph's risk is fixed by design: the claims are not run through its model,
    # and the fixed risk is the one its graph gives any claim
    assert vision.calls == 0
    claim = cases[0]
    state = assess_finetuned.graph.invoke(
        {"images": list(claim.images), "claim": claim.claim}, context=ctx
    )
    assert vision.calls == 1
    assert all(
        o.output == state["assessment"].fraud.model_dump(mode="json")
        for o in result.frauds["finetuned"]
    )
    assert result.assessments == {} and result.chats == {}
    assert set(result.frauds) == {"finetuned", "agentic"}
    fine, agentic = result.fraud_scores["finetuned"], result.fraud_scores["agentic"]
    assert fine["n"] == agentic["n"] == len(cases) and fine["failed"] == agentic["failed"] == 0
    assert fine["constant_risk"] and fine["roc_auc"] == 0.5
    assert all(set(o.output) == {"risk", "level", "signals"} for o in result.frauds["agentic"])
    assert next(v.metric for v in result.verdicts["fraud"]) == "fraud ROC-AUC"
    items = result.to_dict()["items"]["fraud"]["agentic"]
    assert [i["item"] for i in items] == [c.id for c in cases]
    assert [i["fraud"] for i in items] == [c.fraud for c in cases]
    write_report(result, tmp_path / "report", "fraud")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Fraud detection on the test claims" in markdown
    assert "finetuned gives every claim the same fraud risk (0.000): it has no fraud signal" in (
        markdown
    )


def test_without_a_vision_model_the_fine_tuned_fraud_runs_fail_rather_than_score(corpus):
    cases = held_out_claims(corpus, "all")[:3]
    ctx = dataclasses.replace(context(), vision=None)
    result = fraud_run(ctx, cases)
    assert result.fraud_scores["finetuned"]["failed"] == len(cases)
    assert all(o.output is None and o.error for o in result.frauds["finetuned"])


def test_the_agentic_approach_reads_history_without_the_test_claims(corpus, tmp_path):
    claims = read_claims(corpus / "claims" / "claims.csv").claims
    database = ClaimsDatabase(f"sqlite:///{tmp_path / 'all.sqlite'}")
    database.upsert(claims)
    cases = [c for c in held_out_claims(corpus, "all") if c.fraud]
    assert cases, "the corpus has fraudulent test claims"

    def own_label_seen(db) -> bool:
        ctx = dataclasses.replace(context(), claims_db=db)
        result = fraud_run(ctx, cases)
        return any(
            c.id in " ".join(o.output["signals"])
            for c, o in zip(cases, result.frauds["agentic"], strict=True)
        )

    assert own_label_seen(database)  # served as is, a claim's own fraud label is a signal
    assert not own_label_seen(without_claims(database, held_out_claim_ids(corpus), tmp_path / "h"))
