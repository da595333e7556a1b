"""End to end with the real embedded MiniLM: ingest the demo corpus, search it, evaluate."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from api.cli.main import main

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def home(tmp_path_factory, demo_corpus):
    home = tmp_path_factory.mktemp("cli-home")
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(home)})
    manual = demo_corpus.root / "manual" / "vehicle_manual.pdf"
    result = runner.invoke(main, ["ingest", "manuals", str(manual), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ingested"] == 1 and summary["chunks"] >= 390
    return home, runner


def test_second_ingest_skips_the_unchanged_manual(home, demo_corpus):
    _, runner = home
    manual = demo_corpus.root / "manual" / "vehicle_manual.pdf"
    result = runner.invoke(main, ["ingest", "manuals", str(manual), "--json"])
    summary = json.loads(result.stdout)
    assert summary["ingested"] == 0 and summary["skipped_unchanged"] == 1


def test_hybrid_beats_dense_and_reaches_the_recall_target(home, demo_corpus):
    _, runner = home
    questions = demo_corpus.root / "manual" / "qa" / "test_retrieval.jsonl"
    result = runner.invoke(main, ["eval", "retrieval", str(questions), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert set(scores) == {"dense", "bm25", "hybrid"}
    assert scores["hybrid"]["recall@5"] >= 0.95
    assert scores["hybrid"]["recall@5"] > scores["dense"]["recall@5"]
    assert (
        0 < scores["hybrid"]["recall@1"] <= scores["hybrid"]["mrr"] <= scores["hybrid"]["recall@5"]
    )


def test_search_filters_by_kind(home):
    _, runner = home
    result = runner.invoke(
        main, ["search", "caliper bolt torque", "--kind", "SPEC", "-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and all(h["metadata"]["kind"] == "SPEC" for h in hits)
    assert any("caliper" in h["text"].lower() for h in hits)


def test_ingest_claims_and_coco(home, demo_corpus):
    home_dir, runner = home
    claims = runner.invoke(
        main, ["ingest", "claims", str(demo_corpus.root / "claims" / "claims.csv"), "--json"]
    )
    assert claims.exit_code == 0, claims.output
    summary = json.loads(claims.stdout)
    assert summary["ingested"] >= 2000 and summary["rejected"] == []
    assert (home_dir / "tunegraph.db").is_file()

    annotations = demo_corpus.root / "damage" / "annotations" / "val.json"
    coco = runner.invoke(
        main,
        [
            "ingest",
            "coco",
            str(annotations),
            "--images",
            str(demo_corpus.root / "damage" / "images"),
            "--json",
        ],
    )
    assert coco.exit_code == 0, coco.output
    summary = json.loads(coco.stdout)
    assert summary["ingested"] == demo_corpus.counts["damage"]["images"]["val"]
    lines = (home_dir / "datasets" / "val.jsonl").read_text().splitlines()
    assert len(lines) == summary["ingested"]


def test_bad_inputs_are_clear_errors_not_tracebacks(home, tmp_path):
    _, runner = home
    bad_csv = tmp_path / "claims.csv"
    bad_csv.write_text("claim_id,vin\nC1,X\n")
    result = runner.invoke(main, ["ingest", "claims", str(bad_csv)])
    assert result.exit_code == 1 and "missing required column(s)" in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an exception

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"q": "torque?"}\n')
    result = runner.invoke(main, ["eval", "retrieval", str(questions)])
    assert (
        result.exit_code == 1 and 'line 1: need a JSON object with "q" and "must"' in result.output
    )

    empty_home = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path / "empty")})
    result = empty_home.invoke(main, ["search", "torque"])
    assert result.exit_code == 1 and "ingest manuals" in result.output


def test_a_coco_dataset_name_cannot_leave_the_datasets_folder(tmp_path):
    runner = CliRunner(env={"TUNEGRAPH_HOME": str(tmp_path / "home")})
    for name in ("../outside", ".hidden"):
        result = runner.invoke(main, ["ingest", "coco", "x.json", "--name", name])
        assert result.exit_code == 1 and "use a plain file name" in result.output, result.output
    assert not (tmp_path / "outside.jsonl").exists()
