from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from api.cli.main import main
from ingest.records import ManualBlock, QAPair


def _all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _all_commands(command, path)


COMMANDS = list(_all_commands(main))


def test_the_design_subcommands_exist():
    expected = {
        ("demo",),
        ("ingest", "manuals"),
        ("ingest", "claims"),
        ("ingest", "coco"),
        ("finetune", "text"),
        ("finetune", "vision"),
        ("eval",),
        ("compare",),
        ("serve",),
        ("models", "list"),
        ("models", "export"),
        ("client", "chat"),
        ("client", "assess"),
        ("client", "jobs"),
        ("config", "show"),
    }
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "tunegraph")
def test_help_works_for_every_command(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from click.testing import CliRunner; from api.cli.main import main; "
        "CliRunner().invoke(main, ['--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy', 'httpx', 'gunicorn', "
        "'flask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_config_show_reports_env_values(monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_DEMO_SEED", "5")
    result = CliRunner().invoke(main, ["config", "show", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["demo_seed"] == "5"


def test_bad_settings_are_a_usage_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("TUNEGRAPH_PORT", "eighty")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 2
    assert "TUNEGRAPH_PORT='eighty'" in result.output and isinstance(result.exception, SystemExit)


def test_models_list_shows_both_embedded_models(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    names = {m["name"]: m for m in json.loads(result.output)}
    assert names["smollm2-135m-instruct"]["kind"] == "text"
    assert names["all-minilm-l6-v2"]["kind"] == "embedding"


def test_demo_writes_the_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path))
    config = tmp_path / "small.yaml"
    config.write_text("n_claims: 100\nn_images: 12\nn_scanned_pages: 1\n")
    result = CliRunner().invoke(
        main, ["demo", "--corpus-config", str(config), "--seed", "3", "--skip-models"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 3
    assert manifest["counts"]["claims"]["rows"] == 100
    assert "claims: 100 rows" in result.output


def test_demo_rejects_a_bad_corpus_config(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("n_claims: 100\nphotos: 3\n")
    result = CliRunner().invoke(main, ["demo", "--corpus-config", str(config)])
    assert result.exit_code == 2
    assert "unknown key(s) photos" in result.output


def test_unexpected_errors_become_one_clear_line(monkeypatch, tmp_path):
    home = tmp_path / "a-file"
    home.write_text("not a directory")
    monkeypatch.setenv("TUNEGRAPH_HOME", str(home))
    result = CliRunner().invoke(
        main, ["demo", "--skip-models", "--corpus-config", _small(tmp_path)]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "TUNEGRAPH_DEBUG=1" in result.output and str(home) in result.output


def test_unknown_embedding_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path))
    monkeypatch.setenv("TUNEGRAPH_EMBEDDING_MODEL", "no-such-embedder")
    result = CliRunner().invoke(main, ["search", "torque"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "no-such-embedder" in result.output and "TUNEGRAPH_ALLOW_NETWORK" in result.output


def _small(tmp_path) -> str:
    config = tmp_path / "small.yaml"
    config.write_text("n_claims: 100\nn_images: 12\nn_scanned_pages: 1\n")
    return str(config)


def test_demo_summary_reads_the_headline_numbers_of_a_report(tmp_path):
    from api.cli.demo import PROFILE_NAMES, headline, load_profile

    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "assessment_scores": {
                    "finetuned": {"type_f1_macro": 0.81, "invalid_rate": 0.0, "latency_ms": {}},
                    "agentic": {
                        "type_f1_macro": 0.9,
                        "invalid_rate": 0.0,
                        "latency_ms": {"p50": 35000.0},
                    },
                },
                "chat_scores": {
                    "rag": {"spec_exact_match": 0.5, "rouge_l": 0.3, "latency_ms": {"p50": 2100}}
                },
            }
        )
    )
    assert headline(report) == [
        "assessment finetuned: damage-type F1 (macro) 0.81, invalid 0.0, p50 n/a",
        "assessment agentic: damage-type F1 (macro) 0.9, invalid 0.0, p50 35.0 s",
        "chat rag: SPEC exact match 0.5, ROUGE-L 0.3, p50 2.1 s",
    ]
    for profile in map(load_profile, PROFILE_NAMES):  # every profile names configs that ship
        for config in (profile.text_config, profile.damage_config, profile.vlm_config):
            assert (Path(__file__).parents[2] / "configs" / config).is_file(), config


def test_eval_text_can_keep_one_kind_of_question(monkeypatch, tmp_path, demo_corpus, model_store):
    (tmp_path / "demo").symlink_to(demo_corpus.root)
    model_store.config.cache_dir.mkdir(parents=True, exist_ok=True)
    (tmp_path / "models").symlink_to(model_store.config.cache_dir)  # SmolLM2, converted once
    monkeypatch.setenv("TUNEGRAPH_HOME", str(tmp_path))
    args = ["eval", "text", "--kind", "SPEC", "--limit", "3", "--no-retrieval"]
    result = CliRunner().invoke(main, [*args, "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert list(report["base"]["per_kind"]) == ["SPEC"] and report["base"]["n"] == 3
    empty = tmp_path / "qa.jsonl"
    empty.write_text(json.dumps({"id": "q", "block_id": "b", "kind": "WIRING", "split": "test",
                                 "question": "Pin 1?", "answer": "red"}) + "\n")  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--questions", str(empty)])
    assert result.exit_code == 1 and "no SPEC question" in result.output
    # an adapter that kept its test split (own manual): its questions and blocks are the default
    kept = tmp_path / "adapters" / "manual-lora" / "data"
    kept.mkdir(parents=True)
    questions = [
        QAPair("a", "b1", "SPEC", "test", "Injector clamp bolt torque?", "28 Nm"),
        QAPair("u", "", "SPEC", "test", "Sunroof motor torque?", "", answerable=False),
    ]
    (kept / "test.jsonl").write_text("".join(json.dumps(q.to_dict()) + "\n" for q in questions))
    block = ManualBlock("b1", "van.md", 1, (), "SPEC", "Injector clamp bolt: 28 Nm")
    (kept / "blocks.jsonl").write_text(json.dumps(block.to_dict()) + "\n")
    result = CliRunner().invoke(main, [*args, "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert f"questions: {kept / 'test.jsonl'}" in result.output
    report = json.loads((tmp_path / "runs" / "eval-text" / "report.json").read_text())
    assert report["base"]["n"] == 2 and report["base"]["unanswerable"] == 1
